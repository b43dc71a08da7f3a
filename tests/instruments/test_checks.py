from instruments.checks import check_instrument_addresses


def test_a_malformed_address_is_reported_by_manage_py_check(settings):
    settings.INSTRUMENT_PIEZO = "gcs+tcp://controller-without-port"
    settings.INSTRUMENT_FOCUS = "esp301+socket://127.0.0.1:5001"
    errors = check_instrument_addresses(None)
    assert [e.id for e in errors] == ["instruments.E001"]
    assert "INSTRUMENT_PIEZO" in errors[0].msg


def test_sim_and_well_formed_addresses_pass(settings):
    settings.INSTRUMENT_PIEZO = "sim"
    settings.INSTRUMENT_FOCUS = "esp301+serial:///dev/ttyUSB1"
    settings.INSTRUMENT_CAMERA = "pco"
    assert check_instrument_addresses(None) == []

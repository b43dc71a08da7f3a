import pytest

from instruments.addresses import parse_address
from instruments.errors import AddressError, InstrumentError


def test_gcs_tcp():
    a = parse_address("gcs+tcp://127.0.0.1:50000", role="piezo")
    assert (a.driver, a.transport, a.host, a.port) == ("gcs", "tcp", "127.0.0.1", 50000)


def test_gcs_serial_with_baud():
    a = parse_address("gcs+serial:///dev/ttyUSB0?baud=115200", role="piezo")
    assert (a.transport, a.path, a.baud) == ("serial", "/dev/ttyUSB0", 115200)


def test_esp301_urls_for_pyserial():
    assert parse_address("esp301+socket://127.0.0.1:5001", role="focus").serial_url() == "socket://127.0.0.1:5001"
    a = parse_address("esp301+serial:///dev/ttyUSB1", role="focus")
    assert a.serial_url() == "/dev/ttyUSB1" and a.baud == 921600


def test_camera_words_and_options():
    assert parse_address("sim", role="camera").driver == "sim"
    assert parse_address("pco?interface=USB%203.0", role="camera").option("interface") == "USB 3.0"
    assert parse_address("piezo?channel=4&nm_per_unit=100", role="feedback").option("channel") == "4"


@pytest.mark.parametrize("text, role, fragment", [
    ("", "piezo", "empty"),
    ("gcs+tcp://127.0.0.1", "piezo", "host and port"),
    ("gcs+tcp://127.0.0.1:99999", "piezo", "1–65535"),
    ("gcs+udp://127.0.0.1:5", "piezo", "transport 'udp'"),
    ("esp301+socket://127.0.0.1:5001", "piezo", "unknown driver 'esp301'"),
    ("gcs+serial://dev/ttyUSB0", "piezo", "three slashes"),
    ("gcs+tcp://h:5?speed=1", "piezo", "unknown option 'speed'"),
    ("gcs+serial:///dev/ttyUSB0?baud=fast", "piezo", "positive integer"),
    ("camera", "camera", "unknown driver"),
    ("sim", "stage", "role must be"),
])
def test_malformed_addresses_raise_clear_value_errors(text, role, fragment):
    with pytest.raises(AddressError) as info:
        parse_address(text, role=role)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InstrumentError)

from ssumweb.settings import machine_time_zone


def test_pages_use_the_machines_time_zone_and_utc_where_it_cannot_be_told(tmp_path):
    zone = tmp_path / "usr/share/zoneinfo/Europe/Berlin"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif")
    (tmp_path / "localtime").symlink_to(zone)
    assert machine_time_zone(tmp_path / "localtime") == "Europe/Berlin"
    assert machine_time_zone(tmp_path / "missing") == "UTC"
    (tmp_path / "copied").write_bytes(b"TZif")  # a copy, not a link: no name to read
    assert machine_time_zone(tmp_path / "copied") == "UTC"

import pytest

from imaging.models import Sample


@pytest.mark.django_db
def test_root_redirects_to_login_and_login_page_renders(client):
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith("/login/")
    page = client.get("/login/")
    assert page.status_code == 200 and b"Log in" in page.content


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/samples/", "/scans/", "/sem/"])
def test_pages_render_for_a_member(client, viewer, project, url):
    Sample.objects.create(project=project, name="chip 1")
    client.force_login(viewer)
    assert client.get(url).status_code == 200


@pytest.mark.django_db
def test_other_projects_pages_are_404(client, outsider, project):
    sample = Sample.objects.create(project=project, name="secret chip")
    client.force_login(outsider)
    assert client.get(f"/samples/{sample.pk}/").status_code == 404
    assert b"secret chip" not in client.get("/samples/").content


@pytest.mark.django_db
def test_admin_and_media_are_not_public(client):
    assert client.get("/admin/").status_code == 302
    assert client.get("/media/scans/1/frames/000000.tif").status_code in (302, 404)


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["project", "sample", "scan", "frame", "mosaic", "semimage", "registration",
                                   "pairset", "imagepair", "instrument", "trainingrun", "trainedmodel", "translation"])
def test_admin_lists_every_catalogue_model(admin_client, model):
    from django.apps import apps

    label = next(m._meta.app_label for m in apps.get_models() if m._meta.model_name == model)
    assert admin_client.get(f"/admin/{label}/{model}/").status_code == 200


@pytest.mark.django_db
def test_pages_are_not_kept_by_the_browser(client, viewer, project):
    client.force_login(viewer)
    assert "no-store" in client.get("/samples/")["Cache-Control"]
    assert "no-store" in client.get("/login/")["Cache-Control"]


@pytest.mark.django_db
def test_a_failed_login_keeps_the_username_and_asks_for_the_password_again(client, viewer):
    page = client.post("/login/", {"username": viewer.username, "password": "wrong"}).content.decode()
    assert "didn't match" in page
    assert f'name="username" autocomplete="username" required value="{viewer.username}"' in page
    assert 'type="password" autocomplete="current-password" required autofocus' in page

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from imaging import api as imaging_api
from instruments import api as instruments_api
from mlcore import api as mlcore_api

from . import api_views


class Router(DefaultRouter):
    include_format_suffixes = False  # "0_0.jpeg" is a tile name, not a request for a JPEG rendering


router = Router()
router.trailing_slash = "/?"  # tiles are asked for as .../0_0.jpeg, without a slash
router.register("projects", api_views.ProjectViewSet, basename="project")
router.register("samples", imaging_api.SampleViewSet, basename="sample")
router.register("scans", imaging_api.ScanViewSet, basename="scan")
router.register("frames", imaging_api.FrameViewSet, basename="frame")
router.register("mosaics", imaging_api.MosaicViewSet, basename="mosaic")
router.register("sem-images", imaging_api.SEMImageViewSet, basename="semimage")
router.register("registrations", imaging_api.RegistrationViewSet, basename="registration")
router.register("pair-sets", imaging_api.PairSetViewSet, basename="pairset")
router.register("pairs", imaging_api.ImagePairViewSet, basename="imagepair")
router.register("instruments", instruments_api.InstrumentViewSet, basename="instrument")
router.register("training-runs", mlcore_api.TrainingRunViewSet, basename="trainingrun")
router.register("models", mlcore_api.TrainedModelViewSet, basename="trainedmodel")
router.register("translations", mlcore_api.TranslationViewSet, basename="translation")
router.register("demo", api_views.DemoRunViewSet, basename="demorun")

api_patterns = [
    path("", include(router.urls)),
    path("token/", api_views.token, name="token"),
    path("me/", api_views.me, name="me"),
    path("schema/", api_views.SchemaView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("api/", include((api_patterns, "api"))),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("frontend.urls")),
]

handler404 = "ssumweb.api.not_found"

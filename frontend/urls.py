from django.urls import path

from . import learning_views, viewer_views, views

app_name = "frontend"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("projects/<int:pk>/", views.project_detail, name="project"),
    path("samples/", views.sample_list, name="samples"),
    path("samples/<int:pk>/", views.sample_detail, name="sample"),
    path("scans/", views.scan_list, name="scans"),
    path("scans/<int:pk>/", views.scan_detail, name="scan"),
    path("scans/<int:pk>/frames/<int:index>/", views.frame_detail, name="frame"),
    path("sem/", views.sem_list, name="sem-images"),
    path("sem/upload/", learning_views.sem_upload, name="sem-upload"),
    path("sem/<int:pk>/", learning_views.sem_pair, name="sem-pair"),
    path("registrations/<int:pk>/", learning_views.registration_detail, name="registration"),
    path("training/", learning_views.training_list, name="training"),
    path("training/<int:pk>/", learning_views.training_detail, name="training-run"),
    path("models/", learning_views.model_list, name="models"),
    path("viewer/", viewer_views.viewer, name="viewer"),
]

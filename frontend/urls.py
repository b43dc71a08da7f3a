from django.urls import path

from . import viewer_views, views

app_name = "frontend"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("projects/<int:pk>/", views.project_detail, name="project"),
    path("samples/", views.sample_list, name="samples"),
    path("samples/<int:pk>/", views.sample_detail, name="sample"),
    path("scans/", views.scan_list, name="scans"),
    path("scans/<int:pk>/", views.scan_detail, name="scan"),
    path("sem/", views.sem_list, name="sem-images"),
    path("viewer/", viewer_views.viewer, name="viewer"),
]

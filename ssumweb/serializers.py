from django.contrib.auth import get_user_model
from rest_framework import serializers

from .access import visible_projects
from .models import Membership, Project, Role


class VisibleProjectField(serializers.PrimaryKeyRelatedField):
    """A project among the requesting user's: one that does not exist and one of others read alike, so an
    outsider learns nothing of which ids exist."""

    default_error_messages = {"does_not_exist": "No project with id {pk_value} among yours."}

    def get_queryset(self):
        request = self.context.get("request")
        return visible_projects(request.user) if request is not None else Project.objects.none()


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "is_demo", "created_at", "my_role"]
        read_only_fields = ["id", "is_demo", "created_at", "my_role"]

    def get_my_role(self, project) -> str | None:
        from .access import role_in

        return role_in(self.context["request"].user, project.pk)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.SlugRelatedField(source="user", slug_field="username", queryset=get_user_model().objects.all())
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)

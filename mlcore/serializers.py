from django.urls import reverse
from rest_framework import serializers

from imaging.serializers import JOB_FIELDS

from .models import TrainedModel, TrainingRun, Translation


class TrainingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = ["id", "project", "name", "registrations", "pair_sets", "config", "step", "total_steps", "loss_history",
                  "samples", "resume_note", "created_at", *JOB_FIELDS]
        read_only_fields = fields


class TrainingSettingsSerializer(serializers.Serializer):
    """The main settings a lab member chooses; everything else keeps the paper's defaults."""

    steps = serializers.IntegerField(default=2000, min_value=1, max_value=10_000_000)
    crop_px = serializers.IntegerField(default=256, min_value=32, max_value=1024)
    batch_size = serializers.IntegerField(default=4, min_value=1, max_value=256)
    blocks = serializers.IntegerField(default=9, min_value=1, max_value=32)
    features = serializers.IntegerField(default=64, min_value=4, max_value=512)
    lambda_cycle = serializers.FloatField(default=10.0, min_value=0, max_value=1000)
    lambda_contextual = serializers.FloatField(default=1.0, min_value=0, max_value=1000)
    # The paired L1 term: only for well-registered pairs (0 keeps the paper's unpaired CycleGAN).
    lambda_paired = serializers.FloatField(default=0.0, min_value=0, max_value=1000)
    learning_rate = serializers.FloatField(default=2e-4, min_value=1e-7, max_value=1.0)
    seed = serializers.IntegerField(default=0, min_value=0, max_value=2**31 - 1)


class TrainingRunCreateSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    name = serializers.CharField(max_length=200, error_messages={"blank": "Give the run a name."})
    registrations = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=1000,
                                          error_messages={"min_length": "Tick at least one registration to train on.",
                                                          "empty": "Tick at least one registration to train on."})
    pair_sets = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, max_length=1000,
        help_text="At most one finished pair set of each registration (a registration's sets cover the same places, "
                  "so a test tile of one could lie under a training tile of another); a registration left out "
                  "trains on its newest finished set.")
    config = TrainingSettingsSerializer(required=False)


class TrainedModelSerializer(serializers.ModelSerializer):
    weights_url = serializers.SerializerMethodField()

    class Meta:
        model = TrainedModel
        fields = ["id", "project", "name", "training_run", "config", "pixel_size_nm", "normalisation", "metrics",
                  "created_at", "weights_url"]
        read_only_fields = fields

    def get_weights_url(self, model) -> str:
        return reverse("api:trainedmodel-weights", args=[model.pk])


class TranslationSerializer(serializers.ModelSerializer):
    dzi_url = serializers.SerializerMethodField()
    risk_dzi_url = serializers.SerializerMethodField()

    class Meta:
        model = Translation
        fields = ["id", "mosaic", "model", "live", "display_low", "display_high", "created_at", "dzi_url",
                  "risk_dzi_url", *JOB_FIELDS]
        read_only_fields = fields

    def get_dzi_url(self, t) -> str | None:
        return reverse("api:translation-dzi", args=[t.pk, "output"]) if t.pyramid else None

    def get_risk_dzi_url(self, t) -> str | None:
        return reverse("api:translation-dzi", args=[t.pk, "risk"]) if t.risk_pyramid else None


class TranslationCreateSerializer(serializers.Serializer):
    mosaic = serializers.IntegerField()
    model = serializers.IntegerField()

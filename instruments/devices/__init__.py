"""Device protocols (``typing.Protocol``) shared by real drivers and simulated twins."""

from instruments.devices.protocols import Camera, Feedback, FocusStage, Light, Piezo

__all__ = ["Piezo", "FocusStage", "Camera", "Feedback", "Light"]

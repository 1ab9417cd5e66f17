"""The base of the algorithms: instance creation, icon, optional values and running ``jmlgeo``."""

from __future__ import annotations

import shlex

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
)

from . import runner
from .parameters import raster_path, tr
from .provider import configured_executable, icon


class JmlGeoAlgorithm(QgsProcessingAlgorithm):
    """Shared parts: instance creation, icon, optional values and running ``jmlgeo``."""

    def createInstance(self):  # noqa: N802 - QGIS API
        """A fresh instance (Processing runs copies)."""
        return type(self)()

    def icon(self):
        """The plugin's icon."""
        return icon()

    def tr(self, text: str) -> str:
        """Translate a user-facing string."""
        return tr(text)

    def add_advanced(self, parameter: QgsProcessingParameterDefinition) -> None:
        """Add a parameter under "Advanced parameters"."""
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def optional_int(self, parameters, name, context) -> int | None:
        """An optional integer parameter; None when not set."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context)

    def optional_double(self, parameters, name, context) -> float | None:
        """An optional number parameter; None when not set."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsDouble(parameters, name, context)

    def optional_enum(self, parameters, name, context) -> str | None:
        """An optional enum parameter (static strings); None when not set."""
        value = self.parameterAsEnumString(parameters, name, context)
        return value or None

    def scene_paths(self, parameters, name, context) -> list[str]:
        """Files of a multiple-raster parameter."""
        layers = self.parameterAsLayerList(parameters, name, context)
        if not layers:
            raise QgsProcessingException(self.tr(f"{name}: choose at least one raster layer"))
        return [raster_path(layer, name) for layer in layers]

    def run_jmlgeo(self, args: list[str], feedback: QgsProcessingFeedback) -> runner.RunResult:
        """Run ``jmlgeo args...`` with progress, log and cancel wired to ``feedback``."""
        feedback = feedback or QgsProcessingFeedback()
        try:
            executable = runner.find_executable(configured_executable())
        except runner.ExecutableNotFoundError as err:
            raise QgsProcessingException(str(err)) from err
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in [executable, *args]))
        stage = [None]

        def progress(fraction: float, name: str) -> None:
            if name != stage[0]:
                stage[0] = name
                feedback.setProgressText(name)
            feedback.setProgress(100.0 * fraction)

        log = {
            "info": feedback.pushInfo,
            "warning": feedback.pushWarning,
            "console": feedback.pushConsoleInfo,
            "error": feedback.pushDebugInfo,  # the exception below carries it
        }
        try:
            return runner.run(
                executable,
                args,
                on_progress=progress,
                on_log=lambda text, level: log.get(level, feedback.pushInfo)(text),
                is_canceled=feedback.isCanceled,
            )
        except runner.CancelledError as err:
            raise QgsProcessingException(self.tr("Cancelled: jmlgeo was stopped.")) from err
        except runner.RunError as err:
            raise QgsProcessingException(str(err)) from err

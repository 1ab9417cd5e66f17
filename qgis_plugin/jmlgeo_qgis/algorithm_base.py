"""The base of the algorithms: instance creation, icon, optional values and running ``jmlgeo``."""

from __future__ import annotations

import shlex

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFolderDestination,
)

from . import runner, runs
from .parameters import folder_value, raster_path, tr
from .provider import configured_executable, icon
from .settings import runs_folder


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

    def add_run_folder(self, name: str, label: str) -> None:
        """A folder destination whose default is the persistent runs folder (never temporary).

        Left at the default (or emptied, or set to a temporary folder), each run gets a new
        folder inside the runs folder, named after its scenes and the time.
        """
        base = runs_folder()
        parameter = QgsProcessingParameterFolderDestination(
            name, self.tr(f"{label} (default: a new folder in {base})"), base, optional=True
        )  # optional: left out (processing.run) or skipped, it is a new folder in the runs folder
        parameter.setHelp(
            self.tr(
                "Left at the runs folder, each run gets its own folder there, named after the "
                "scenes and the time. Change the runs folder in Settings > Options > Processing "
                "> Providers > JMLNet (jmlgeo)."
            )
        )
        self.addParameter(parameter)

    def run_folder(
        self, parameters, name, context, kind: str, scenes: list[str], resume: bool = False
    ) -> str:
        """The folder of this run, created: the chosen one, or a new one in the runs folder."""
        value = folder_value(parameters, name)
        chosen = (
            None
            if runs.is_unchosen(value)
            else self.parameterAsFileOutput(parameters, name, context)
        )
        folder = runs.resolve_run_folder(chosen, runs_folder(), kind, scenes, resume=resume)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def scene_paths(self, parameters, name, context) -> list[str]:
        """Files of a multiple-raster parameter."""
        layers = self.parameterAsLayerList(parameters, name, context)
        if not layers:
            raise QgsProcessingException(self.tr(f"{name}: choose at least one raster layer"))
        return [raster_path(layer, name) for layer in layers]

    def executable(self) -> str:
        """The ``jmlgeo`` to run, checked: it must answer ``--version`` with our name."""
        try:
            executable = runner.find_executable(configured_executable())
            runner.check_executable(executable)
        except runner.ExecutableNotFoundError as err:
            raise QgsProcessingException(str(err)) from err
        return executable

    def run_jmlgeo(
        self, args: list[str], feedback: QgsProcessingFeedback, console: bool = True
    ) -> runner.RunResult:
        """Run ``jmlgeo args...`` with progress, log and cancel wired to ``feedback``.

        ``console=False`` keeps the command's plain output (tables) out of the log; it is still
        in the result's ``text``.

        Each line reaches the log once: a stage's name as the progress text (which the dialog
        also logs), repeated lines and warnings dropped, and the ``error:`` line only as the
        exception's message.
        """
        feedback = feedback or QgsProcessingFeedback()
        executable = self.executable()
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in [executable, *args]))
        stage = [None]
        lines = runner.LineFilter()

        def progress(fraction: float, name: str) -> None:
            if name != stage[0]:
                stage[0] = name
                if lines.fresh(name):
                    feedback.setProgressText(name)
            feedback.setProgress(100.0 * fraction)

        push = {
            "info": feedback.pushInfo,
            "warning": feedback.pushWarning,
            "console": feedback.pushConsoleInfo,
        }

        def log(text: str, level: str) -> None:
            if level == "console" and not console:
                return
            if level != "error" and lines.fresh(text, level):  # errors: the exception says it
                push.get(level, feedback.pushInfo)(text)

        try:
            return runner.run(
                executable,
                args,
                on_progress=progress,
                on_log=log,
                is_canceled=feedback.isCanceled,
            )
        except runner.CancelledError as err:
            raise QgsProcessingException(self.tr("Cancelled: jmlgeo was stopped.")) from err
        except runner.RunError as err:
            raise QgsProcessingException(str(err)) from err

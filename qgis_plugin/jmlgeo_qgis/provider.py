"""The Processing provider ``jmlgeo``: its algorithms and its settings (executable, runs folder)."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .runner import EXECUTABLE_NAME

PROVIDER_ID = "jmlgeo"

#: The Processing setting (Settings > Options > Processing > Providers) naming the executable.
EXECUTABLE_SETTING = "JMLGEO_EXECUTABLE"

#: The Processing setting naming the runs folder (see :mod:`.runs`); as in :mod:`.settings`.
RUNS_FOLDER_SETTING = "JMLGEO_RUNS_FOLDER"

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


def icon() -> QIcon:
    """The plugin's icon."""
    return QIcon(ICON)


def configured_executable() -> str | None:
    """The executable set in the Processing options, or None (auto-detect)."""
    from processing.core.ProcessingConfig import ProcessingConfig

    value = ProcessingConfig.getSetting(EXECUTABLE_SETTING)
    return str(value) if value else None


class JmlGeoProvider(QgsProcessingProvider):
    """Predict, Train from boxes, Proposals and Evaluate, each running ``jmlgeo``."""

    def load(self) -> bool:
        """Register the executable setting, then the algorithms."""
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                EXECUTABLE_SETTING,
                self.tr(
                    f"{EXECUTABLE_NAME} executable, or the venv that holds it "
                    "(empty: look on PATH, ~/.venv, ~/jmlgeo/.venv, ...)"
                ),
                "",
                valuetype=Setting.FILE,
            )
        )
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                RUNS_FOLDER_SETTING,
                self.tr(
                    "Runs folder: where runs without a chosen folder go, one sub-folder each "
                    "(empty: jmlgeo-runs beside the saved project, else ~/jmlgeo-runs)"
                ),
                "",
                valuetype=Setting.FOLDER,
            )
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting."""
        from processing.core.ProcessingConfig import ProcessingConfig

        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)
        ProcessingConfig.removeSetting(RUNS_FOLDER_SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        """Add one instance of each algorithm."""
        from .algorithms import ALGORITHMS

        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def id(self) -> str:
        """Prefix of the algorithm ids (``jmlgeo:predict``)."""
        return PROVIDER_ID

    def name(self) -> str:
        """Name in the Processing toolbox."""
        return "JMLNet (jmlgeo)"

    def longName(self) -> str:  # noqa: N802 - QGIS API
        """Longer name, for tooltips."""
        return "JMLNet: pixel-accurate maps from bounding boxes (jmlgeo command line)"

    def icon(self) -> QIcon:
        """Icon in the toolbox."""
        return icon()

"""The plugin: registers the Processing provider, adds a toolbar button and a Raster menu."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QAction

from .defaults import train_defaults
from .provider import PROVIDER_ID, JmlGeoProvider, icon
from .settings import last_bundle, scene_layer

MENU = "&JMLNet (jmlgeo)"


class JmlGeoPlugin:
    """What QGIS loads: the provider (also headless, e.g. ``qgis_process``), button and menu."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: JmlGeoProvider | None = None
        self.predict_action: QAction | None = None
        self.actions: list[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        """Register the provider (QGIS calls this without a GUI too)."""
        if self.provider is None:
            self.provider = JmlGeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        """The provider, a toolbar button for Predict and a menu entry per algorithm."""
        self.initProcessing()
        parent = self.iface.mainWindow()
        self.predict_action = QAction(icon(), "Predict with JMLNet…", parent)
        self.predict_action.setObjectName("jmlgeoPredict")
        self.predict_action.setToolTip("Classify the active raster layer with a JMLNet bundle")
        self.predict_action.triggered.connect(self.open_predict)
        self.iface.addToolBarIcon(self.predict_action)
        self.actions = [self.predict_action]
        for label, name in (
            ("Train from boxes…", "train"),
            ("Proposals…", "proposals"),
            ("Evaluate…", "evaluate"),
        ):
            action = QAction(icon(), label, parent)
            action.setObjectName(f"jmlgeo{name.title()}")
            action.triggered.connect(lambda _checked=False, n=name: self.open_named(n))
            self.actions.append(action)
        settings = QAction("Where is jmlgeo? (settings)…", parent)
        settings.setObjectName("jmlgeoSettings")
        settings.triggered.connect(self.open_settings)
        self.actions.append(settings)
        for action in self.actions:
            self.iface.addPluginToRasterMenu(MENU, action)

    def unload(self) -> None:
        """Remove everything initGui added."""
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        if self.predict_action is not None:
            self.iface.removeToolBarIcon(self.predict_action)
        self.actions, self.predict_action = [], None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def predict_parameters(self) -> dict:
        """Dialog presets: the active raster, else the last used or topmost; the last bundle."""
        parameters = {}
        layer = scene_layer(self.iface.activeLayer())
        if layer is not None:
            parameters["INPUT"] = layer
        bundle = last_bundle()
        if bundle:
            parameters["BUNDLE"] = bundle
        return parameters

    def train_parameters(self) -> dict:
        """Dialog presets: the selected (or active) rasters, the likeliest box layer, its field."""
        return train_defaults(self.iface)

    def open_predict(self) -> None:
        """The Predict dialog with the active raster layer preselected."""
        self.open_algorithm("predict", self.predict_parameters())

    def open_named(self, name: str) -> None:
        """The dialog of one algorithm, prefilled where the plugin knows what to offer."""
        presets = {"train": self.train_parameters, "proposals": self.train_parameters}
        parameters = presets[name]() if name in presets else {}
        if name == "proposals":
            parameters.pop("PREDICT", None)
        self.open_algorithm(name, parameters)

    def open_algorithm(self, name: str, parameters: dict | None = None) -> None:
        """Open an algorithm's Processing dialog (background run, progress, log, cancel)."""
        import processing

        processing.execAlgorithmDialog(f"{PROVIDER_ID}:{name}", parameters or {})

    def open_settings(self) -> None:
        """The Processing options, where the jmlgeo executable is set."""
        self.iface.showOptionsDialog(self.iface.mainWindow(), currentPage="processingOptions")

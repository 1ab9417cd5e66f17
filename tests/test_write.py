import geopandas as gpd
import pytest
from shapely.geometry import box

from jmlnet_geo.errors import OutputError
from jmlnet_geo.io.write import atomic_output, write_vector


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "out.gpkg"
    frame = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32632")
    write_vector(frame, target, "boxes")
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        open(tmp, "w").close()
        raise RuntimeError("crash")
    assert target.read_bytes() == before and len(list(tmp_path.iterdir())) == 1
    write_vector(frame.assign(**{"class": ["b"]}), target, "boxes")
    assert gpd.read_file(target)["class"].tolist() == ["b"]


def test_output_errors(tmp_path):
    frame = gpd.GeoDataFrame({"c": [1]}, geometry=[box(0, 0, 1, 1)])
    with pytest.raises(OutputError, match="folder .* does not exist"):
        write_vector(frame, tmp_path / "no" / "x.gpkg", "x")
    with pytest.raises(
        OutputError, match=r"cannot write '.shp'; use one of .fgb, .geojson, .gpkg, .json"
    ):
        write_vector(frame, tmp_path / "x.shp", "x")
    (tmp_path / "dir.gpkg").mkdir()
    with pytest.raises(OutputError, match="dir.gpkg: is a folder"):
        write_vector(frame, tmp_path / "dir.gpkg", "x")
    with pytest.raises(OutputError, match="cannot write 'no extension'"):
        write_vector(frame, tmp_path / "boxes", "x")

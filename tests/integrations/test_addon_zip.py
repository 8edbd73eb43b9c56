"""``farm blender-addon --out DIR``: an installable zip with the add-on's package folder."""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import pytest

from farmtui.cli import main
from farmtui.integrations.addon import ZIP_NAME, addon_files


def test_farm_blender_addon_writes_the_zip_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "folder"
    assert main(["blender-addon", "--out", str(out)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == (out / ZIP_NAME).resolve()
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(f"farmtui_blender/{p.name}" for p in addon_files())
        assert {"farmtui_blender/__init__.py", "farmtui_blender/submission.py"} <= set(names)
        init = ast.parse(archive.read("farmtui_blender/__init__.py"))
    info = next(
        node.value
        for node in init.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "bl_info"
    )
    bl_info = ast.literal_eval(info)
    assert bl_info["category"] == "Render"
    assert bl_info["blender"] >= (3, 0, 0)
    assert not list(out.glob("*.partial"))


def test_the_zip_is_the_same_bytes_every_time_and_json_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["blender-addon", "--out", str(tmp_path / "a"), "--json"]) == 0
    first = Path(json.loads(capsys.readouterr().out)["path"])
    assert main(["blender-addon", "--out", str(tmp_path / "b"), "--json"]) == 0
    second = Path(json.loads(capsys.readouterr().out)["path"])
    assert first.read_bytes() == second.read_bytes()


def test_an_unwritable_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["blender-addon", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("farm blender-addon: cannot write the add-on into ")
    assert err.count("\n") == 1

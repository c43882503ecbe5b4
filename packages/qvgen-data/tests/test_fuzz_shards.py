"""Fuzzing the latent shard folders a user hands the loader (issue 32): a shard whose tar members are mutated
(a `.json` meta with wrong keys or values, a `.safetensors` with a mutated header or body, members renamed,
dropped or doubled), a tar cut or flipped byte-wise, or a mutated `manifest.json`, either loads as
`LatentBatch`es (`on_error="skip"`: the bad samples left out) or is one `ValueError` (`ShardFormatError`)
naming the shard or manifest; never a traceback, a hang or a write.

Inputs start from real shards written by `write_shards` (the random samples of conftest.py's factory).
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core.fuzzing import (
    Blob,
    check_loader,
    fuzz_settings,
    junk_scalars,
    mutated_bytes,
    mutated_safetensors,
    mutated_trees,
    retyped,
)
from qvgen.data import EncodedSample, LatentBatch, LoaderConfig, WriterConfig, make_loader, write_shards

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
MANIFEST = "manifest.json"


def _samples(n: int) -> list[EncodedSample]:
    """conftest.py's `make_samples` factory (a fixture there, so copied): random float32 samples."""
    gen = torch.Generator().manual_seed(n)
    return [
        EncodedSample(
            id=f"clip/{i}.mp4",
            caption=f"caption number {i}",
            latents_mean=torch.randn((4, 5, 2, 2), generator=gen),
            latents_logvar=torch.randn((4, 5, 2, 2), generator=gen) - 3,
            text_embeddings=torch.randn(6, 8, generator=gen),
            text_length=i % 7,
            video_shape=(5, 16, 16),
        )
        for i in range(n)
    ]


@functools.cache
def valid_shards() -> dict[str, bytes]:
    """Every file of a real shard folder (4 samples, 2 per shard): relative name → bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(_samples(4), tmp, WriterConfig(samples_per_shard=2), encoder_name="fuzz")
        return {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}


def _members(tar_bytes: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@st.composite
def mutated_member(draw: st.DrawFn, name: str, data: bytes) -> tuple[str, bytes]:
    if name.endswith(".json"):
        meta = json.loads(data)
        if draw(st.booleans()):  # one field of the meta given a wrong value
            key = draw(st.sampled_from(sorted(meta)))
            meta[key] = draw(st.one_of(retyped(meta[key]), junk_scalars))
            return name, json.dumps(meta, allow_nan=True).encode("utf-8", errors="surrogatepass")
        if draw(st.integers(0, 3)):
            return name, json.dumps(draw(mutated_trees(meta)), allow_nan=True).encode(
                "utf-8", errors="surrogatepass"
            )
        return name, draw(mutated_bytes(data))
    if name.endswith(".safetensors"):
        return name, draw(mutated_safetensors(data))
    return name, draw(mutated_bytes(data))


@st.composite
def shard_folders(draw: st.DrawFn) -> dict[str, Blob]:
    files = dict(valid_shards())
    shards = sorted(n for n in files if n.endswith(".tar"))
    how = draw(
        st.sampled_from(
            [
                "same",
                "meta_field",
                "meta_field",
                "meta_field",
                "member",
                "member",
                "members",
                "tar_bytes",
                "manifest",
                "manifest_bytes",
            ]
        )
    )
    if how == "meta_field":  # one field of one sample's meta given a value of the wrong kind
        shard = draw(st.sampled_from(shards))
        members = _members(files[shard])
        metas = [i for i, (name, _) in enumerate(members) if name.endswith(".json")]
        i = draw(st.sampled_from(metas))
        meta = json.loads(members[i][1])
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(retyped(meta[key]))
        members[i] = (members[i][0], json.dumps(meta, allow_nan=True).encode("utf-8", errors="surrogatepass"))
        files[shard] = _tar(members)
    elif how in ("member", "members"):
        shard = draw(st.sampled_from(shards))
        members = _members(files[shard])
        if how == "member":
            i = draw(st.integers(0, len(members) - 1))
            members[i] = draw(mutated_member(*members[i]))
        else:
            i = draw(st.integers(0, len(members) - 1))
            edit = draw(st.sampled_from(["drop", "double", "rename", "ext", "extra"]))
            if edit == "drop":
                members.pop(i)
            elif edit == "double":
                members.insert(i, members[i])
            elif edit == "rename":
                members[i] = (
                    draw(st.sampled_from(["x", "a.b.json", "000000", ".json", "../up.json"])),
                    members[i][1],
                )
            elif edit == "ext":
                stem = members[i][0].split(".")[0]
                members[i] = (
                    f"{stem}.{draw(st.sampled_from(['npy', 'txt', 'JSON', 'safetensors', 'json']))}",
                    members[i][1],
                )
            else:
                members.append((f"{members[i][0].split('.')[0]}.npy", draw(st.binary(max_size=64))))
        files[shard] = _tar(members)
    elif how == "tar_bytes":
        shard = draw(st.sampled_from(shards))
        files[shard] = draw(mutated_bytes(files[shard]))
    elif how == "manifest":
        tree = draw(mutated_trees(json.loads(files[MANIFEST])))
        files[MANIFEST] = json.dumps(tree, allow_nan=True).encode("utf-8", errors="surrogatepass")
    elif how == "manifest_bytes":
        junk = [b"[" * 100_000, b'{"num_samples": ' + b"1" * 5000 + b"}", b"\xff{}"]
        files[MANIFEST] = draw(st.one_of(mutated_bytes(files[MANIFEST]), st.sampled_from(junk)))
    return {k: Blob(v) for k, v in files.items()}


def _valid(batches: object) -> None:
    assert isinstance(batches, list) and all(isinstance(b, LatentBatch) for b in batches)


@fuzz_settings(200)
@given(shard_folders(), st.sampled_from(["raise", "raise", "skip"]), st.sampled_from([1, 3]))
def test_fuzzed_shard_folder_loads_or_is_one_error_naming_the_shard(
    files: dict[str, bytes], on_error: str, batch_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        cfg = LoaderConfig(
            shards=folder, mode="eval", batch_size=batch_size, num_workers=0, on_error=on_error
        )
        check_loader(
            f"data.make_loader.on_error={on_error}",
            lambda: list(make_loader(cfg)),
            folder=folder,
            names=[str(folder)],
            validate=_valid,
        )


def test_the_unmutated_shard_folder_loads(tmp_path: Path) -> None:
    for name, data in valid_shards().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    batches = list(make_loader(LoaderConfig(shards=tmp_path, mode="eval", num_workers=0)))
    assert sum(b.batch_size for b in batches) == 4


@pytest.mark.parametrize("text_length", [float("inf"), float("-inf")])
def test_sample_meta_with_an_infinite_text_length_is_one_error_naming_the_shard(
    tmp_path: Path, text_length: float
) -> None:
    """Found by the fuzzing above: `int(inf)` raised OverflowError out of the loader."""
    files = dict(valid_shards())
    members = _members(files["shard-000000.tar"])
    name, data = members[0]
    assert name.endswith(".json")
    members[0] = (name, json.dumps({**json.loads(data), "text_length": text_length}).encode())
    files["shard-000000.tar"] = _tar(members)
    for n, d in files.items():
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(d)
    with pytest.raises(ValueError, match="unreadable sample: OverflowError") as info:
        list(make_loader(LoaderConfig(shards=tmp_path, mode="eval", num_workers=0)))
    assert str(info.value).startswith(str(tmp_path / "shard-000000.tar"))


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"\xff{}", "not UTF-8"),  # found by the fuzzing above: was UnicodeDecodeError
        (b'{"num_samples": ' + b"1" * 5000 + b"}", "ValueError"),  # was a bare ValueError naming no file
        (b"[" * 100_000, "RecursionError"),
        (b'{"num_samples": -1}', "num_samples"),  # pydantic's report, now one line
    ],
)
def test_unreadable_shard_manifest_is_one_line_naming_it(
    tmp_path: Path, manifest: bytes, message: str
) -> None:
    for name, data in valid_shards().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / MANIFEST).write_bytes(manifest)
    with pytest.raises(ValueError, match=message) as info:
        list(make_loader(LoaderConfig(shards=tmp_path, mode="eval", num_workers=0)))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{tmp_path / MANIFEST}: ")

"""PE arrays: the shipped configs, shortcuts, group classes and validation errors."""

from pathlib import Path

import pytest

from hypar.array import (array_from_dict, array_from_levels, array_from_pes, default_array, load_array,
                         split_counts)
from hypar.cost import CostModel
from hypar.errors import ArrayConfigError
from hypar.synthetic import gemm_chain

from paths import CONFIGS


# ----------------------------------------------------------------------------- shipped configs

def test_default_config():
    a = load_array(CONFIGS / "default.yaml")
    assert a.fanouts == (2, 2, 2, 2) and a.n_pes == 16 and a.dtype_bytes == 2
    assert not a.heterogeneous
    d = default_array()
    # The built-in default matches the file.
    assert d.fanouts == a.fanouts and d.levels == a.levels and d.dtype_bytes == a.dtype_bytes
    assert {k.tflops for k in d.kinds.values()} == {k.tflops for k in a.kinds.values()} == {100.0}


def test_hypar2019_config():
    a = load_array(CONFIGS / "hypar2019.yaml")
    assert a.fanouts == (2, 2, 2, 2) and a.n_pes == 16 and a.batch == 256
    assert not a.heterogeneous


def test_accpar2020_config_top_split_is_heterogeneous():
    a = load_array(CONFIGS / "accpar2020.yaml")
    assert a.n_pes == 32 and a.fanouts == (2, 2, 2, 2, 2) and a.heterogeneous
    assert a.pes[:16] == ("tpu_v2",) * 16 and a.pes[16:] == ("tpu_v3",) * 16
    # Top level: 16 x 45 vs 16 x 123 TFLOP/s -> partition ratio 45 : 123.
    (top,) = a.classes[0].values()
    fr = [c[1] for c in top.children]
    assert fr == pytest.approx([45 / 168, 123 / 168])
    # Below the top every group is one kind: equal halves.
    for cls in a.classes[1]:
        assert [c[1] for c in a.classes[1][cls].children] == [0.5, 0.5]


def test_gpu_cluster_config():
    a = load_array(CONFIGS / "gpu_cluster.yaml")
    assert a.fanouts == (8, 8) and a.n_pes == 64
    assert a.levels[0].bandwidth_gbps < a.levels[1].bandwidth_gbps   # network slower than NVLink


@pytest.mark.parametrize("name", ["default", "hypar2019", "accpar2020", "gpu_cluster"])
def test_shipped_configs_evaluate_a_chain(name):
    a = load_array(CONFIGS / f"{name}.yaml")
    B = a.batch or 64
    m = CostModel(gemm_chain([64, 64, 64], batch=B), a, "accpar")
    ev = m.evaluate([("I",) * a.n_levels] * 2)
    t = ev.totals()
    # Data parallel: only dW all-reduces (64 x 64 = 4096 elements per layer, never shrunk by
    # I above). A k-way level with G groups moves 2(k-1)/k x A per subgroup x k x G; on an
    # equal-split level that is 2(k-1) G A elements. Heterogeneous 2-way levels give A each too.
    groups, expect = 1, 0
    for k in a.fanouts:
        expect += 2 * (k - 1) * groups * 4096 * 2 * a.dtype_bytes
        groups *= k
    assert t["comm_bytes"] == expect
    assert t["time_s"] > 0 and t["energy_j"] > 0


def test_configs_readme_lists_every_shipped_file():
    text = (CONFIGS / "README.md").read_text()
    for p in CONFIGS.glob("*.yaml"):
        assert p.name in text


# ----------------------------------------------------------------------------- shortcuts

def test_pes_shortcut_binary_and_factored():
    assert array_from_pes(16).fanouts == (2, 2, 2, 2)
    assert array_from_pes(12).fanouts == (3, 2, 2)          # largest factor on top
    assert array_from_pes(7).fanouts == (7,)
    assert array_from_levels([2, 2, 4]).n_pes == 16
    with pytest.raises(ArrayConfigError, match="at least 2"):
        array_from_pes(1)
    with pytest.raises(ArrayConfigError, match=">= 2"):
        array_from_levels([2, 1])


def test_split_counts():
    assert split_counts(3, [0.5, 0.5]) == [2, 1]
    assert split_counts(8, [0.25, 0.75]) == [2, 6]
    assert split_counts(9, [0.25, 0.75]) == [2, 7]
    assert split_counts(10, [1 / 3] * 3) == [4, 3, 3]
    assert sum(split_counts(1000, [45 / 168, 123 / 168])) == 1000


# ----------------------------------------------------------------------------- bad configs

def write(tmp_path, text, name="bad.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_missing_levels(tmp_path):
    with pytest.raises(ArrayConfigError, match="levels") as e:
        load_array(write(tmp_path, "name: x\npe_kinds: {a: {tflops: 1}}\n"))
    assert "bad" in str(e.value)      # names the file
    with pytest.raises(ArrayConfigError, match="levels"):
        load_array(write(tmp_path, "levels: []\n"))


def test_fanout_one(tmp_path):
    with pytest.raises(ArrayConfigError, match="fanout 1") as e:
        load_array(write(tmp_path, "levels:\n  - {fanout: 1}\n"))
    assert "at least 2" in str(e.value)


def test_fanout_not_an_integer(tmp_path):
    with pytest.raises(ArrayConfigError, match="fanout"):
        load_array(write(tmp_path, "levels:\n  - {fanout: two}\n"))
    with pytest.raises(ArrayConfigError, match="fanout"):
        load_array(write(tmp_path, "levels:\n  - {bandwidth_gbps: 10}\n"))


def test_pe_counts_must_match_fanouts(tmp_path):
    text = ("pe_kinds: {a: {tflops: 1}, b: {tflops: 2}}\n"
            "levels:\n  - {fanout: 2}\n  - {fanout: 2}\n"
            "pes:\n  - {kind: a, count: 2}\n  - {kind: b, count: 1}\n")
    with pytest.raises(ArrayConfigError) as e:
        load_array(write(tmp_path, text))
    msg = str(e.value)
    assert "3" in msg and "4" in msg and "fanouts" in msg


def test_unknown_pe_kind(tmp_path):
    text = ("pe_kinds: {a: {tflops: 1}}\n"
            "levels:\n  - {fanout: 2}\n"
            "pes:\n  - {kind: a, count: 1}\n  - {kind: tpu_v9, count: 1}\n")
    with pytest.raises(ArrayConfigError, match="tpu_v9") as e:
        load_array(write(tmp_path, text))
    assert "pe_kinds" in str(e.value)


def test_not_yaml(tmp_path):
    with pytest.raises(ArrayConfigError, match="YAML"):
        load_array(write(tmp_path, "levels: [ {fanout: 2\n  : : ]\n"))
    # Valid YAML that is not a mapping.
    with pytest.raises(ArrayConfigError, match="mapping"):
        load_array(write(tmp_path, "just some text\n"))
    with pytest.raises(ArrayConfigError, match="mapping"):
        load_array(write(tmp_path, ""))


def test_missing_file(tmp_path):
    with pytest.raises(ArrayConfigError, match="no such array config"):
        load_array(tmp_path / "nope.yaml")


def test_other_bad_values():
    with pytest.raises(ArrayConfigError, match="unknown key"):
        array_from_dict({"levels": [{"fanout": 2}], "levles": 1})
    with pytest.raises(ArrayConfigError, match="tflops"):
        array_from_dict({"levels": [{"fanout": 2}], "pe_kinds": {"a": {"tflops": "fast"}}})
    with pytest.raises(ArrayConfigError, match="positive"):
        array_from_dict({"levels": [{"fanout": 2}], "pe_kinds": {"a": {"tflops": 0}}})
    with pytest.raises(ArrayConfigError, match="bandwidth"):
        array_from_dict({"levels": [{"fanout": 2, "bandwidth_gbps": 0}]})
    with pytest.raises(ArrayConfigError, match="several pe_kinds"):
        array_from_dict({"levels": [{"fanout": 2}], "pe_kinds": {"a": {}, "b": {}}})
    with pytest.raises(ArrayConfigError, match="count"):
        array_from_dict({"levels": [{"fanout": 2}], "pe_kinds": {"a": {}},
                         "pes": [{"kind": "a", "count": 0}]})


@pytest.mark.parametrize("d,pattern", [
    ({"levels": [{"fanout": 2, "bandwith_gbps": 10}]}, r"levels\[0\]: unknown key\(s\) \['bandwith_gbps'\]"),
    ({"levels": [{"fanout": 2}], "pe_kinds": {"a": {"tflop": 5}}}, r"pe_kinds\.a: unknown key\(s\) \['tflop'\]"),
    ({"levels": [{"fanout": 2}], "pes": [{"kind": "accelerator", "count": 2, "where": 1}]},
     r"pes\[0\]: unknown key\(s\) \['where'\]"),
    ({"levels": [{"fanout": 2}], "pe_kinds": ["a"]}, r"'pe_kinds' must map kind names"),
    ({"levels": [{"fanout": 2}], "pe_kinds": {"a": 5}}, r"pe_kinds\.a must map tflops"),
])
def test_a_typo_in_a_nested_key_is_an_error(d, pattern):
    """Keys inside pe_kinds, levels and pes are checked like the top-level ones (never ignored)."""
    with pytest.raises(ArrayConfigError, match=pattern):
        array_from_dict(d, "arr")

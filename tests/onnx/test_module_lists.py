"""The name-scope lists the dynamo exporter writes (``repr`` of a list of strings) read back
exactly, by the fast split or by ``ast.literal_eval``."""

from hypothesis import given
from hypothesis import strategies as st

from hypar.onnx.modules import _literal_list

NAMES = st.lists(st.text(alphabet="ab.0_ '\"\\,[]", max_size=6), max_size=5)


@given(NAMES)
def test_a_list_of_names_reads_back_as_itself(names):
    assert _literal_list(repr(names)) == names


def test_what_is_not_a_list_of_strings_is_none():
    for text in ("not a list", "[1, 2]", "['a', 3]", "{'a': 1}", "['unclosed"):
        assert _literal_list(text) is None

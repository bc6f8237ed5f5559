import pytest

from servekit.errors import InvalidSpec
from servekit.spec import ServeSpec, normalise_loras, short_name


def test_build_normalises_user_options():
    spec = ServeSpec.build("vllm", "m", lora={"a": "/x"}, extra_args=["--foo"], env={"B": "1"}, ctx=512)
    assert spec.loras == (("a", "/x"),)
    assert spec.extra_args == ("--foo",)
    assert spec.env_dict == {"B": "1"}
    assert spec.ctx == 512
    assert spec.host == "127.0.0.1"


def test_unknown_option_names_the_known_ones():
    with pytest.raises(InvalidSpec, match="Unknown option.*ctx_len.*extra_args"):
        ServeSpec.build("vllm", "m", ctx_len=5)


@pytest.mark.parametrize("field,value", [("port", 0), ("ctx", -1), ("parallel", "4"), ("port", 70000)])
def test_bad_numbers_are_rejected(field, value):
    with pytest.raises(InvalidSpec, match=field):
        ServeSpec.build("vllm", "m", **{field: value})


def test_lora_forms():
    assert normalise_loras(["a=/p", ("b", "/q")]) == (("a", "/p"), ("b", "/q"))
    with pytest.raises(InvalidSpec, match="NAME=PATH"):
        normalise_loras(["nope"])


def test_short_name():
    assert short_name("Qwen/Qwen2-1.5B-Instruct") == "qwen2-1.5b-instruct"
    assert short_name("/models/tiny model.gguf") == "tiny-model"

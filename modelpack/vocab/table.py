"""THE vocabulary: one literal row per layer and op (torch-free; torch bindings live in modelpack.torch).

Argument names, order and defaults are those of the torch.nn constructor (layers)
or the torch / torch.nn.functional function (ops), minus ``device``/``dtype`` and
the arguments listed in ``omitted``. Adding an entry is one row here plus its
torch binding; ``tests/test_vocab.py`` compares every row with torch when torch is
installed, and the JSON Schema in ``schemas/`` is regenerated from these rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from .aten import ATEN_OPS
from .types import REQUIRED, Arg, LayerDef, OpDef, freeze_table

__all__ = ["VOCAB_VERSION", "LAYERS", "OPS"]

# The spec format version this table defines; a row's `since` is at most this.
VOCAB_VERSION = 2

_R = REQUIRED
_POOL_OMIT = ("return_indices",)  # would change the number of outputs
_INPLACE = ("inplace",)  # in-place ops would overwrite values other nodes still read


# ----------------------------------------------------------------------------- argument shorthands
# Small constructors for the arguments that recur across rows; each returns one Arg.


def _count(name: str, default: object = _R, minimum: int = 1, doc: str = "") -> Arg:
    """A positive size (features, channels, heads...)."""
    return Arg(name, "int", default, minimum=minimum, doc=doc)


def _ints(name: str, n: int | None, default: object = _R, minimum: int = 0, **kw: object) -> Arg:
    """An int or a list of ``n`` ints (kernel_size=3 or [3, 3]); n None: any length."""
    return Arg(name, "ints", default, minimum=minimum, length=n, **kw)  # type: ignore[arg-type]


def _flag(name: str, default: bool) -> Arg:
    return Arg(name, "bool", default)


def _real(name: str, default: object = _R, minimum: float | None = None, maximum: float | None = None,
          nullable: bool = False) -> Arg:
    return Arg(name, "float", default, minimum=minimum, maximum=maximum, nullable=nullable)


def _prob(name: str, default: float) -> Arg:
    """A probability in [0, 1] (dropout)."""
    return _real(name, default, minimum=0.0, maximum=1.0)


def _dim(name: str = "dim", default: object = _R, nullable: bool = False) -> Arg:
    """A tensor dimension index; negative counts from the end."""
    return Arg(name, "int", default, nullable=nullable)


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _conv(name: str, n: int, doc: str) -> LayerDef:
    """ConvNd: same arguments for every n, only the tuple length differs."""
    return LayerDef(name, 1, (
        _count("in_channels"), _count("out_channels"), _ints("kernel_size", n, minimum=1),
        _ints("stride", n, 1, minimum=1), _ints("padding", n, 0, keywords=("same", "valid")),
        _ints("dilation", n, 1, minimum=1), _count("groups", 1), _flag("bias", True),
        Arg("padding_mode", "str", "zeros", choices=_PADDING_MODES),
    ), doc=doc)


def _conv_t(name: str, n: int, doc: str) -> LayerDef:
    """ConvTransposeNd: output_padding added, dilation moved after bias, zeros padding only."""
    return LayerDef(name, 1, (
        _count("in_channels"), _count("out_channels"), _ints("kernel_size", n, minimum=1),
        _ints("stride", n, 1, minimum=1), _ints("padding", n, 0), _ints("output_padding", n, 0),
        _count("groups", 1), _flag("bias", True), _ints("dilation", n, 1, minimum=1),
        Arg("padding_mode", "str", "zeros", choices=("zeros",)),
    ), doc=doc)


def _norm(name: str, affine: bool, running: bool, doc: str) -> LayerDef:
    """BatchNorm / InstanceNorm: same arguments, different defaults."""
    return LayerDef(name, 1, (
        _count("num_features"), _real("eps", 1e-5, minimum=0.0),
        _real("momentum", 0.1, minimum=0.0, maximum=1.0, nullable=True),
        _flag("affine", affine), _flag("track_running_stats", running),
        Arg("bias", "bool", True, doc="only recent torch releases accept bias=False"),
    ), doc=doc)


def _pool(name: str, n: int, doc: str, *, avg: bool) -> LayerDef:
    """MaxPoolNd / AvgPoolNd."""
    head = (_ints("kernel_size", n, minimum=1), Arg("stride", "ints", None, minimum=1, length=n, nullable=True),
            _ints("padding", n, 0))
    if avg:
        tail: tuple[Arg, ...] = (_flag("ceil_mode", False), _flag("count_include_pad", True))
        if n == 2:
            tail += (Arg("divisor_override", "int", None, minimum=1, nullable=True),)
        return LayerDef(name, 1, head + tail, doc=doc)
    tail = (_ints("dilation", n, 1, minimum=1), _flag("ceil_mode", False))
    return LayerDef(name, 1, head + tail, doc=doc, omitted=_POOL_OMIT)


def _adaptive(name: str, n: int, doc: str, *, omitted: tuple[str, ...] = ()) -> LayerDef:
    return LayerDef(name, 1, (_ints("output_size", n, minimum=1),), doc=doc, omitted=omitted)


def _act(name: str, doc: str, *args: Arg, inplace: bool = True) -> LayerDef:
    """An activation module; most take an `inplace` flag last."""
    tail = (_flag("inplace", False),) if inplace else ()
    return LayerDef(name, 1, args + tail, doc=doc)


def _fn(name: str, doc: str, *args: Arg, inputs: tuple[int, int | None] = (1, 1),
        outputs: int | None = 1, omitted: tuple[str, ...] = ()) -> OpDef:
    return OpDef(name, 1, args, inputs=inputs, outputs=outputs, doc=doc, omitted=omitted)


def _own(name: str, doc: str, *args: Arg, inputs: tuple[int, int | None] = (1, 1),
         outputs: int | None = 1, training: bool = False) -> OpDef:
    """An op implemented in modelpack.torch.ops (not one torch function with these arguments)."""
    return OpDef(name, 1, args, inputs=inputs, outputs=outputs, doc=doc, training=training, impl="modelpack")


_RNN_ARGS = (
    _count("input_size"), _count("hidden_size"), _count("num_layers", 1), _flag("bias", True),
    _flag("batch_first", False), _prob("dropout", 0.0), _flag("bidirectional", False),
)

# ----------------------------------------------------------------------------- layers

LAYERS: Mapping[str, LayerDef] = freeze_table([
    # linear
    LayerDef("Linear", 1, (_count("in_features"), _count("out_features"), _flag("bias", True)),
             doc="y = x W^T + b"),
    LayerDef("Bilinear", 1, (_count("in1_features"), _count("in2_features"), _count("out_features"),
                             _flag("bias", True)), inputs=(2, 2), doc="y = x1^T A x2 + b"),
    LayerDef("Identity", 1, doc="returns its input"),
    # convolution
    _conv("Conv1d", 1, "1-d convolution over (N, C, L)"),
    _conv("Conv2d", 2, "2-d convolution over (N, C, H, W)"),
    _conv("Conv3d", 3, "3-d convolution over (N, C, D, H, W)"),
    _conv_t("ConvTranspose1d", 1, "1-d transposed convolution"),
    _conv_t("ConvTranspose2d", 2, "2-d transposed convolution"),
    # normalization
    _norm("BatchNorm1d", True, True, "batch normalization over (N, C) or (N, C, L)"),
    _norm("BatchNorm2d", True, True, "batch normalization over (N, C, H, W)"),
    _norm("InstanceNorm2d", False, False, "instance normalization over (N, C, H, W)"),
    LayerDef("LayerNorm", 1, (_ints("normalized_shape", None, minimum=1), _real("eps", 1e-5, minimum=0.0),
                              _flag("elementwise_affine", True), _flag("bias", True)),
             doc="normalization over the last dimensions"),
    LayerDef("GroupNorm", 1, (_count("num_groups"), _count("num_channels"), _real("eps", 1e-5, minimum=0.0),
                              _flag("affine", True),
                              Arg("bias", "bool", True, doc="only recent torch releases accept bias=False")),
             doc="normalization over groups of channels"),
    # dropout
    LayerDef("Dropout", 1, (_prob("p", 0.5), _flag("inplace", False)), doc="zeroes elements with probability p"),
    LayerDef("Dropout2d", 1, (_prob("p", 0.5), _flag("inplace", False)), doc="zeroes whole channels"),
    # embedding and recurrent
    LayerDef("Embedding", 1, (
        _count("num_embeddings"), _count("embedding_dim"), Arg("padding_idx", "int", None, nullable=True),
        _real("max_norm", None, minimum=0.0, nullable=True), _real("norm_type", 2.0),
        _flag("scale_grad_by_freq", False), _flag("sparse", False),
    ), omitted=("_weight", "_freeze"), doc="lookup table of integer ids"),
    LayerDef("LSTM", 1, _RNN_ARGS + (_count("proj_size", 0, minimum=0),), inputs=(1, 2), outputs=2,
             doc="returns (output, (h_n, c_n)); optional second input (h_0, c_0)"),
    LayerDef("GRU", 1, _RNN_ARGS, inputs=(1, 2), outputs=2, doc="returns (output, h_n); optional second input h_0"),
    # attention
    LayerDef("MultiheadAttention", 1, (
        _count("embed_dim"), _count("num_heads"), _prob("dropout", 0.0), _flag("bias", True),
        _flag("add_bias_kv", False), _flag("add_zero_attn", False),
        Arg("kdim", "int", None, minimum=1, nullable=True), Arg("vdim", "int", None, minimum=1, nullable=True),
        _flag("batch_first", False),
        Arg("need_weights", "bool", True, call=True, doc="forward argument: also compute the attention weights "
                                                           "(false: output 1 is None, and a faster kernel runs)"),
        Arg("average_attn_weights", "bool", True, call=True, doc="forward argument: average the weights over heads"),
    ), inputs=(3, 3), outputs=2, doc="inputs (query, key, value); returns (output, attention weights)"),
    LayerDef("TransformerEncoderLayer", 1, (
        _count("d_model"), _count("nhead"), _count("dim_feedforward", 2048), _prob("dropout", 0.1),
        Arg("activation", "str", "relu", choices=("relu", "gelu")), _real("layer_norm_eps", 1e-5, minimum=0.0),
        _flag("batch_first", False), _flag("norm_first", False), _flag("bias", True),
    ), doc="self-attention + feed-forward block (no mask input in version 1)"),
    # pooling
    _pool("MaxPool1d", 1, "max over sliding windows of (N, C, L)", avg=False),
    _pool("MaxPool2d", 2, "max over sliding windows of (N, C, H, W)", avg=False),
    _pool("AvgPool1d", 1, "mean over sliding windows of (N, C, L)", avg=True),
    _pool("AvgPool2d", 2, "mean over sliding windows of (N, C, H, W)", avg=True),
    _adaptive("AdaptiveAvgPool1d", 1, "mean pooling to a fixed output length"),
    _adaptive("AdaptiveAvgPool2d", 2, "mean pooling to a fixed output size"),
    _adaptive("AdaptiveMaxPool1d", 1, "max pooling to a fixed output length", omitted=_POOL_OMIT),
    _adaptive("AdaptiveMaxPool2d", 2, "max pooling to a fixed output size", omitted=_POOL_OMIT),
    # reshaping and resampling
    LayerDef("Flatten", 1, (_dim("start_dim", 1), _dim("end_dim", -1)), doc="flattens dims start_dim..end_dim"),
    LayerDef("Unflatten", 1, (_dim("dim"), Arg("unflattened_size", "int_list", minimum=-1)),
             doc="splits one dim into unflattened_size"),
    LayerDef("Upsample", 1, (
        Arg("size", "ints", None, minimum=1, nullable=True),
        Arg("scale_factor", "floats", None, minimum=0.0, nullable=True),
        Arg("mode", "str", "nearest",
            choices=("nearest", "linear", "bilinear", "bicubic", "trilinear", "nearest-exact")),
        Arg("align_corners", "bool", None, nullable=True),
        Arg("recompute_scale_factor", "bool", None, nullable=True),
    ), doc="resizes to `size` or by `scale_factor`"),
    # activations as layers (names as in torch.nn)
    _act("ReLU", "max(0, x)"),
    _act("ReLU6", "min(max(0, x), 6)"),
    _act("LeakyReLU", "x if x > 0 else negative_slope * x", _real("negative_slope", 0.01)),
    LayerDef("PReLU", 1, (_count("num_parameters", 1), _real("init", 0.25)), doc="LeakyReLU with a learned slope"),
    _act("ELU", "x if x > 0 else alpha * (exp(x) - 1)", _real("alpha", 1.0)),
    _act("GELU", "Gaussian error linear unit", Arg("approximate", "str", "none", choices=("none", "tanh")),
         inplace=False),
    _act("SiLU", "x * sigmoid(x)"),
    _act("Mish", "x * tanh(softplus(x))"),
    _act("Hardswish", "piecewise-linear swish"),
    _act("Hardsigmoid", "piecewise-linear sigmoid"),
    _act("Sigmoid", "1 / (1 + exp(-x))", inplace=False),
    _act("Tanh", "hyperbolic tangent", inplace=False),
    _act("Softmax", "exp(x) / sum(exp(x)) along dim", _dim(default=None, nullable=True), inplace=False),
    _act("LogSoftmax", "log(softmax(x)) along dim", _dim(default=None, nullable=True), inplace=False),
    # tensors owned by no other layer (class tokens, position tables, layer scales, weights read
    # directly): the node name is the state_dict key itself; read with `in: []`
    LayerDef("Parameter", 1, (Arg("shape", "int_list", minimum=0), _flag("requires_grad", True),
                              Arg("dtype", "dtype", "float32")),
             inputs=(0, 0), impl="modelpack", doc="a learned tensor; its node name is its state_dict key"),
    LayerDef("Buffer", 1, (Arg("shape", "int_list", minimum=0), Arg("dtype", "dtype", "float32"),
                           _flag("persistent", True)),
             inputs=(0, 0), impl="modelpack",
             doc="a stored, not learned, tensor; its node name is its state_dict key (persistent: false keeps it "
                 "out of state_dict(), as torch's register_buffer(persistent=False) does; the file still holds it)"),
])

# ----------------------------------------------------------------------------- ops

OPS: Mapping[str, OpDef] = freeze_table([
    # activations as functions (names as in torch.nn.functional)
    _fn("relu", "max(0, x)", omitted=_INPLACE),
    _fn("relu6", "min(max(0, x), 6)", omitted=_INPLACE),
    _fn("leaky_relu", "x if x > 0 else negative_slope * x", _real("negative_slope", 0.01), omitted=_INPLACE),
    _fn("elu", "x if x > 0 else alpha * (exp(x) - 1)", _real("alpha", 1.0), omitted=_INPLACE),
    _fn("gelu", "Gaussian error linear unit", Arg("approximate", "str", "none", choices=("none", "tanh"))),
    _fn("silu", "x * sigmoid(x)", omitted=_INPLACE),
    _fn("mish", "x * tanh(softplus(x))", omitted=_INPLACE),
    _fn("hardswish", "piecewise-linear swish", omitted=_INPLACE),
    _fn("hardsigmoid", "piecewise-linear sigmoid", omitted=_INPLACE),
    _fn("sigmoid", "1 / (1 + exp(-x))"),
    _fn("tanh", "hyperbolic tangent"),
    _fn("softmax", "exp(x) / sum(exp(x)) along dim", _dim(), omitted=("dtype",)),
    _fn("log_softmax", "log(softmax(x)) along dim", _dim(), omitted=("dtype",)),
    # arithmetic (torch.add etc.: input, other)
    _fn("add", "input + other", inputs=(2, 2), omitted=("alpha",)),
    _fn("sub", "input - other", inputs=(2, 2), omitted=("alpha",)),
    _fn("mul", "input * other", inputs=(2, 2)),
    _fn("div", "input / other", Arg("rounding_mode", "str", None, choices=("trunc", "floor"), nullable=True),
        inputs=(2, 2)),
    _fn("matmul", "matrix product", inputs=(2, 2)),
    # joining and splitting
    _fn("cat", "concatenates its inputs along dim", _dim(default=0), inputs=(1, None)),
    _fn("stack", "stacks its inputs along a new dim", _dim(default=0), inputs=(1, None)),
    _fn("chunk", "splits into `chunks` pieces along dim (a tuple)", _count("chunks"), _dim(default=0),
        outputs=None),
    _fn("getitem", "takes element `index` of a tuple (or along dim 0 of a tensor)", Arg("index", "int")),
    # shape
    _fn("flatten", "flattens dims start_dim..end_dim (torch.flatten)", _dim("start_dim", 0),
        _dim("end_dim", -1)),
    _fn("reshape", "reshapes to `shape` (-1 infers one dim; items may be {ref: node})", Arg("shape", "size")),
    _fn("permute", "reorders dims", Arg("dims", "int_list")),
    _fn("transpose", "swaps dim0 and dim1", _dim("dim0"), _dim("dim1")),
    # reductions
    _fn("mean", "mean over dim (all dims when null)", Arg("dim", "ints", None, nullable=True),
        _flag("keepdim", False), omitted=("dtype",)),
    _fn("sum", "sum over dim (all dims when null)", Arg("dim", "ints", None, nullable=True),
        _flag("keepdim", False), omitted=("dtype",)),
    # ---- real-model coverage (issue 5)
    # values that are not tensors: shape arithmetic stays symbolic (runs at another batch size)
    _own("size", "x.size(dim), or the whole size (a tuple of ints) when dim is null", _dim(default=None, nullable=True)),
    _own("dim", "number of dimensions of x"),
    _own("scalar", "a literal operand (x * 0.5 reads a scalar node)", Arg("value", "value"), inputs=(0, 0)),
    _own("neg", "-x (tensor or int)"),
    _own("pow", "input ** exponent (tensor or number)", inputs=(2, 2)),
    _own("index", "x[index]: a list is a tuple of items; ':', '1:', '::2' slices, '...', null a new axis, "
                  "{ref: node} a computed index", Arg("index", "value")),
    _own("expand", "x.expand(size); items may be {ref: node}, -1 keeps a size", Arg("size", "size")),
    _own("einsum", "torch.einsum(equation, *inputs)", Arg("equation", "str"), inputs=(1, None)),
    _fn("unsqueeze", "inserts a size-1 dim", _dim()),
    _own("squeeze", "removes size-1 dims (all when dim is null)", Arg("dim", "ints", None, nullable=True)),
    _fn("unbind", "splits along dim into its slices (a tuple)", _dim(default=0), outputs=None),
    _fn("roll", "rolls elements along dims", Arg("shifts", "ints"), Arg("dims", "ints", None, nullable=True)),
    _fn("exp", "e ** x"),
    _fn("abs", "|x|"),
    _fn("sqrt", "square root"),
    _fn("rsqrt", "1 / sqrt(x)"),
    _fn("linear", "x W^T + b with weight and bias as inputs (x, weight[, bias])", inputs=(2, 3)),
    _fn("adaptive_avg_pool2d", "mean pooling to output_size", Arg("output_size", "size")),
    _own("adaptive_max_pool2d", "max pooling to output_size", Arg("output_size", "size")),
    _own("max_pool2d", "max over sliding windows", _ints("kernel_size", 2, minimum=1),
        Arg("stride", "ints", None, minimum=1, length=2, nullable=True), _ints("padding", 2, 0),
        _ints("dilation", 2, 1, minimum=1), _flag("ceil_mode", False)),
    _fn("avg_pool2d", "mean over sliding windows", _ints("kernel_size", 2, minimum=1),
        Arg("stride", "ints", None, minimum=1, length=2, nullable=True), _ints("padding", 2, 0),
        _flag("ceil_mode", False), _flag("count_include_pad", True),
        Arg("divisor_override", "int", None, minimum=1, nullable=True)),
    _fn("interpolate", "resizes to size (may be {ref: node}) or by scale_factor",
        Arg("size", "size", None), Arg("scale_factor", "floats", None, minimum=0.0, nullable=True),
        Arg("mode", "str", "nearest", choices=("nearest", "linear", "bilinear", "bicubic", "trilinear",
                                               "area", "nearest-exact")),
        Arg("align_corners", "bool", None, nullable=True), Arg("recompute_scale_factor", "bool", None, nullable=True),
        _flag("antialias", False)),
    _fn("pad", "pads the last dims by `pad` (left, right, top, bottom...)", Arg("pad", "int_list"),
        Arg("mode", "str", "constant", choices=("constant", "reflect", "replicate", "circular")),
        _real("value", None, nullable=True)),
    _own("layer_norm", "layer normalization; inputs (x[, weight[, bias]])", _ints("normalized_shape", None, minimum=1),
         _real("eps", 1e-5, minimum=0.0), inputs=(1, 3)),
    _own("dropout", "zeroes elements with probability p while the module trains", _prob("p", 0.5),
         training=True),
    _own("stochastic_depth", "drops whole rows (or the batch) with probability p while the module trains "
                             "(torchvision.ops.stochastic_depth)", _prob("p", _R),
         Arg("mode", "str", choices=("row", "batch")), training=True),
    _own("shifted_window_attention", "Swin (shifted) window self-attention; inputs (x, qkv_weight, proj_weight, "
                                     "relative_position_bias[, qkv_bias[, proj_bias[, logit_scale]]])",
         Arg("window_size", "int_list", minimum=1, length=2), _count("num_heads"),
         Arg("shift_size", "int_list", minimum=0, length=2), _prob("attention_dropout", 0.0), _prob("dropout", 0.0),
         inputs=(4, 7), training=True),
    _own("relative_position_bias", "Swin: table[index] as a (1, heads, N, N) bias; inputs (table, index)",
         Arg("window_size", "int_list", minimum=1, length=2), inputs=(2, 2)),
    _own("patch_merging_pad", "Swin: pad H, W to even and concatenate the 2x2 neighbours on channels"),
    # ---- version 2: the ATen ops of torch.export's IR, generated (vocab/aten.py, tools/gen_aten_vocab.py)
    *ATEN_OPS.values(),
])

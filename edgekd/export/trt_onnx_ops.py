"""The ONNX operators TensorRT's ONNX parser imports, and the element types of their data input, per release family.

Copied from onnx-tensorrt's own support matrix (github.com/onnx/onnx-tensorrt, docs/operators.md; rows marked Y):

    "8.6"   branch 8.6-GA   (ee0b139b): "TensorRT 8.6 supports operators up to Opset 17" (8.5 documents the same)
    "10"    branch 10.1-GA  (96e78110): "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"

TensorRT 11.x publishes no newer matrix in that repository; edgekd holds 11.x graphs to the 10.x table, which is the
conservative choice for the ops edgekd emits (11.x removed weak typing, not operators). Type names are ONNX's
TensorProto names; FP8 in the table is FLOAT8E4M3FN.
"""

from __future__ import annotations

# family -> (lowest opset, highest opset)
OPSETS = {"8.6": (1, 17), "10": (9, 20)}

_BY_TYPES = {
    "8.6": {
        "FLOAT FLOAT16": (
            "Acos Acosh Asin Asinh Atan Atanh BatchNormalization Ceil Celu Cos Cosh CumSum Dropout Einsum Erf Exp "
            "Floor GRU GridSample GroupNormalization ImageScaler InstanceNormalization IsInf LRN LSTM "
            "LayerNormalization Log LogSoftmax LpNormalization MatMul MeanVarianceNormalization NonMaxSuppression "
            "NonZero Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike "
            "Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
            "ReduceSum ReduceSumSquare Resize RoiAlign Scan Sin Sinh Softmax Sqrt Tan Upsample"),
        "FLOAT FLOAT16 INT32": (
            "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Mean "
            "Min Mod Mul Neg Range Shrink SpaceToDepth Sub Sum TopK"),
        "FLOAT FLOAT16 INT8": (
            "Clip Conv ConvTranspose Elu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool HardSigmoid HardSwish "
            "LeakyRelu LpPool MaxPool PRelu ParametricSoftplus Relu Round ScaledTanh Selu Sigmoid Softplus "
            "Softsign Tanh ThresholdedRelu"),
        "BOOL FLOAT FLOAT16 INT32 INT8": (
            "Concat Constant Gather GatherElements GatherND Identity Reshape ReverseSequence Shape Size Slice "
            "Squeeze Transpose Trilu Unsqueeze"),
        "BOOL FLOAT FLOAT16 INT32": "Expand EyeLike Flatten If Loop OneHot Split Tile Where",
        "FLOAT FLOAT16 INT32 INT8": "AveragePool Pad Scatter ScatterElements ScatterND Sign",
        "BOOL": "And Not Or Xor",
        "BOOL FLOAT FLOAT16 INT32 INT8 UINT8": "Cast",
        "FLOAT": "ConstantOfShape",
        "INT8": "DequantizeLinear",
    },
    "10": {
        "BFLOAT16 FLOAT FLOAT16": (
            "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose "
            "Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor GRU Gemm GlobalAveragePool GlobalLpPool "
            "GlobalMaxPool GroupNormalization HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization "
            "IsInf LRN LSTM LayerNormalization LeakyRelu Log LogSoftmax LpNormalization LpPool MatMul MaxPool "
            "MeanVarianceNormalization PRelu ParametricSoftplus Pow QuantizeLinear RNN RandomNormal "
            "RandomNormalLike RandomUniform RandomUniformLike Reciprocal Resize Round ScaledTanh Scan Selu "
            "Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample"),
        "BFLOAT16 FLOAT FLOAT16 INT32 INT64": (
            "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min "
            "Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
            "ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth "
            "Sub Sum TopK"),
        "BFLOAT16 BOOL FLOAT FLOAT16 INT32 INT64": (
            "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If "
            "Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze "
            "Where"),
        "FLOAT FLOAT16": "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
        "BOOL": "And Not Or Xor",
        "BFLOAT16 BOOL FLOAT FLOAT16 INT32 INT64 UINT8": "Cast CastLike",
        "FLOAT8E4M3FN INT4 INT8": "DequantizeLinear",
        "BFLOAT16 FLOAT FLOAT16 INT32 INT64 INT8": "Gelu",
        "BFLOAT16 FLOAT FLOAT16 FLOAT8E4M3FN INT32 INT64": "Mean",
    },
}

# family -> op type -> element types its data input (input 0) may have
SUPPORTED: dict[str, dict[str, frozenset[str]]] = {
    family: {op: frozenset(types.split()) for types, ops in table.items() for op in ops.split()}
    for family, table in _BY_TYPES.items()}

"""Every `keras.applications` model of Keras 3.15, registered as a `BackboneSpec`.

The table is data: family, preprocessing, sizes, feature width and layer groups. Group patterns
name the layers Keras gives stable names to; auto-named layers (`conv2d_7`, `add_3`) join the
group of the next named layer, so no pattern depends on Keras' global name counters.
"""

from __future__ import annotations

import functools

import keras

from tltk.backbones.registry import BackboneSpec, register_backbone

# Preprocessing per family, as `keras.applications.<family>.preprocess_input` does it.
_PREPROCESSING = {
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "mobilenet_v3": "none",  # include_preprocessing=True inside the model
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
}


def _stages(prefix_fmt, stages, stem=None, top=None):
    groups = [("stem", stem)] if stem else []
    groups += [(name, prefix_fmt.format(pattern)) for name, pattern in stages]
    if top:
        groups.append(("top", top))
    return tuple(groups)


_RESNET = _stages(
    "^({})_",
    [(f"conv{i}", f"conv{i}") for i in range(2, 5)] + [("conv5", "conv5|post")],
    stem="^(conv1|pool1)_",
)
_VGG = tuple((f"block{i}", f"^block{i}_") for i in range(1, 6))
_DENSENET = _stages(
    "^({})",
    [
        ("block1", "conv2_|pool2_"),
        ("block2", "conv3_|pool3_"),
        ("block3", "conv4_|pool4_"),
        ("block4", "conv5_|bn$|relu$"),
    ],
    stem="^(conv1|pool1)",
)
_XCEPTION = tuple(
    [("entry", "^block[1-4]_")]
    + [(f"middle{i}", f"^block{i}_") for i in range(5, 13)]
    + [("exit", "^block1[34]_")]
)
_INCEPTION_V3 = tuple(
    [("stem", "^mixed[0-2]$")] + [(f"mixed{i}", f"^mixed{i}$") for i in range(3, 11)]
)
_INCEPTION_RESNET_V2 = (
    ("stem", "^mixed_5b$"),
    ("block35", "^block35_"),
    ("reduction_a", "^mixed_6a$"),
    ("block17", "^block17_"),
    ("reduction_b", "^mixed_7a$"),
    ("block8", "^block8_"),
    ("top", "^conv_7b"),
)
_MOBILENET = (
    ("stem", r"^conv1"),
    ("block1-3", r"^conv_(dw|pw|pad)_[1-3](_|$)"),
    ("block4-5", r"^conv_(dw|pw|pad)_[4-5](_|$)"),
    ("block6-11", r"^conv_(dw|pw|pad)_([6-9]|1[01])(_|$)"),
    ("block12-13", r"^conv_(dw|pw|pad)_1[23](_|$)"),
)
_MOBILENET_V2 = (
    ("stem", r"^(Conv1|bn_Conv1|expanded_conv_)"),
    ("block_1-2", r"^block_[12]_"),
    ("block_3-5", r"^block_[3-5]_"),
    ("block_6-9", r"^block_[6-9]_"),
    ("block_10-12", r"^block_1[0-2]_"),
    ("block_13-15", r"^block_1[3-5]_"),
    ("block_16", r"^block_16_"),
    ("top", r"^(Conv_1|out_relu)"),
)


def _mobilenet_v3(stages):
    groups = [("stem", r"^(rescaling|conv$|conv_bn$|expanded_conv_(depthwise|squeeze|project))")]
    for name, ids in stages:
        groups.append((name, rf"^expanded_conv_({ids})_"))
    groups.append(("top", r"^conv_1"))
    return tuple(groups)


_MOBILENET_V3_SMALL = _mobilenet_v3(
    [("block1-2", "[12]"), ("block3-7", "[3-7]"), ("block8-10", "[89]|10")]
)
_MOBILENET_V3_LARGE = _mobilenet_v3(
    [
        ("block1-2", "[12]"),
        ("block3-5", "[3-5]"),
        ("block6-11", "[6-9]|1[01]"),
        ("block12-14", "1[2-4]"),
    ]
)
_EFFICIENTNET = tuple(
    [("stem", "^(rescaling|normalization|stem_)")]
    + [(f"block{i}", f"^block{i}") for i in range(1, 8)]
    + [("top", "^top_")]
)
_EFFICIENTNET_V2 = tuple(
    [("stem", "^(rescaling|normalization|stem_)")]
    + [(f"block{i}", f"^block{i}") for i in range(1, 7)]
    + [("top", "^top_")]
)


def _convnext(prefix):
    return tuple(
        [("stem", f"^{prefix}_(prestem|stem)")]
        + [(f"stage{i}", f"^{prefix}_(downsampling_block_{i - 1}|stage_{i})_") for i in range(4)]
    )


def _nasnet(normal_per_stage):
    n = normal_per_stage
    first = "|".join(str(i) for i in range(0, n))
    second = "|".join(str(i) for i in range(n + 1, 2 * n + 1))
    third = "|".join(str(i) for i in range(2 * n + 1, 3 * n + 1))
    return (
        ("stem", r"^reduction_concat_stem_[12]$"),
        ("cells1", rf"^(normal_concat_({first})|reduction_concat_reduce_{n})$"),
        ("cells2", rf"^(normal_concat_({second})|reduction_concat_reduce_{2 * n})$"),
        ("cells3", rf"^normal_concat_({third})$"),
    )


# (Keras class, registry name, family, default size, min size, feature dim, groups)
_TABLE = [
    ("ResNet50", "resnet50", "resnet", 224, 32, 2048, _RESNET),
    ("ResNet101", "resnet101", "resnet", 224, 32, 2048, _RESNET),
    ("ResNet152", "resnet152", "resnet", 224, 32, 2048, _RESNET),
    ("ResNet50V2", "resnet50_v2", "resnet_v2", 224, 32, 2048, _RESNET),
    ("ResNet101V2", "resnet101_v2", "resnet_v2", 224, 32, 2048, _RESNET),
    ("ResNet152V2", "resnet152_v2", "resnet_v2", 224, 32, 2048, _RESNET),
    ("VGG16", "vgg16", "vgg16", 224, 32, 512, _VGG),
    ("VGG19", "vgg19", "vgg19", 224, 32, 512, _VGG),
    ("Xception", "xception", "xception", 299, 71, 2048, _XCEPTION),
    ("InceptionV3", "inception_v3", "inception_v3", 299, 75, 2048, _INCEPTION_V3),
    (
        "InceptionResNetV2",
        "inception_resnet_v2",
        "inception_resnet_v2",
        299,
        75,
        1536,
        _INCEPTION_RESNET_V2,
    ),
    ("MobileNet", "mobilenet", "mobilenet", 224, 32, 1024, _MOBILENET),
    ("MobileNetV2", "mobilenet_v2", "mobilenet_v2", 224, 32, 1280, _MOBILENET_V2),
    ("MobileNetV3Small", "mobilenet_v3_small", "mobilenet_v3", 224, 32, 576, _MOBILENET_V3_SMALL),
    ("MobileNetV3Large", "mobilenet_v3_large", "mobilenet_v3", 224, 32, 960, _MOBILENET_V3_LARGE),
    ("DenseNet121", "densenet121", "densenet", 224, 32, 1024, _DENSENET),
    ("DenseNet169", "densenet169", "densenet", 224, 32, 1664, _DENSENET),
    ("DenseNet201", "densenet201", "densenet", 224, 32, 1920, _DENSENET),
    ("NASNetMobile", "nasnet_mobile", "nasnet", 224, 32, 1056, _nasnet(4)),
    ("NASNetLarge", "nasnet_large", "nasnet", 331, 32, 4032, _nasnet(6)),
    ("EfficientNetB0", "efficientnet_b0", "efficientnet", 224, 32, 1280, _EFFICIENTNET),
    ("EfficientNetB1", "efficientnet_b1", "efficientnet", 240, 32, 1280, _EFFICIENTNET),
    ("EfficientNetB2", "efficientnet_b2", "efficientnet", 260, 32, 1408, _EFFICIENTNET),
    ("EfficientNetB3", "efficientnet_b3", "efficientnet", 300, 32, 1536, _EFFICIENTNET),
    ("EfficientNetB4", "efficientnet_b4", "efficientnet", 380, 32, 1792, _EFFICIENTNET),
    ("EfficientNetB5", "efficientnet_b5", "efficientnet", 456, 32, 2048, _EFFICIENTNET),
    ("EfficientNetB6", "efficientnet_b6", "efficientnet", 528, 32, 2304, _EFFICIENTNET),
    ("EfficientNetB7", "efficientnet_b7", "efficientnet", 600, 32, 2560, _EFFICIENTNET),
    ("EfficientNetV2B0", "efficientnet_v2_b0", "efficientnet_v2", 224, 32, 1280, _EFFICIENTNET_V2),
    ("EfficientNetV2B1", "efficientnet_v2_b1", "efficientnet_v2", 240, 32, 1280, _EFFICIENTNET_V2),
    ("EfficientNetV2B2", "efficientnet_v2_b2", "efficientnet_v2", 260, 32, 1408, _EFFICIENTNET_V2),
    ("EfficientNetV2B3", "efficientnet_v2_b3", "efficientnet_v2", 300, 32, 1536, _EFFICIENTNET_V2),
    ("EfficientNetV2S", "efficientnet_v2_s", "efficientnet_v2", 384, 32, 1280, _EFFICIENTNET_V2),
    ("EfficientNetV2M", "efficientnet_v2_m", "efficientnet_v2", 480, 32, 1280, _EFFICIENTNET_V2),
    ("EfficientNetV2L", "efficientnet_v2_l", "efficientnet_v2", 480, 32, 1280, _EFFICIENTNET_V2),
    ("ConvNeXtTiny", "convnext_tiny", "convnext", 224, 32, 768, _convnext("convnext_tiny")),
    ("ConvNeXtSmall", "convnext_small", "convnext", 224, 32, 768, _convnext("convnext_small")),
    ("ConvNeXtBase", "convnext_base", "convnext", 224, 32, 1024, _convnext("convnext_base")),
    ("ConvNeXtLarge", "convnext_large", "convnext", 224, 32, 1536, _convnext("convnext_large")),
    ("ConvNeXtXLarge", "convnext_xlarge", "convnext", 224, 32, 2048, _convnext("convnext_xlarge")),
]


def _construct(class_name, input_shape, weights):
    """Builds the headless Keras Applications model (`include_top=False`, no pooling)."""
    return getattr(keras.applications, class_name)(
        include_top=False, weights=weights, input_shape=input_shape
    )


def preprocess_input_fn(family: str):
    """Returns `keras.applications.<family>.preprocess_input`, the reference for the family."""
    return getattr(keras.applications, family).preprocess_input


def _register_all():
    for class_name, name, family, size, min_size, dim, groups in _TABLE:
        register_backbone(
            BackboneSpec(
                name=name,
                family=family,
                source="keras_applications",
                constructor=functools.partial(_construct, class_name),
                preprocessing=_PREPROCESSING[family],
                default_input_size=(size, size),
                min_input_size=(min_size, min_size),
                feature_dim=dim,
                groups=groups,
                weights=("imagenet",),
                aliases=(class_name,),
                description=f"keras.applications.{class_name} (ImageNet-1k)",
            ),
            overwrite=True,
        )


_register_all()

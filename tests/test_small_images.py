"""Images smaller than `image_size` (down to 1x1) load upscaled, in every format and route."""

import numpy as np
import pytest
from PIL import Image

import tltk.data
from tltk.data import decode, images
from tltk.export.images import image_batch

SIZE = (64, 64)  # (height, width) the small files are loaded at: larger than each in some axis
# (width, height) of the stored files: 1x1, a 1-pixel column and row, thin in one axis only
# (wider or taller than SIZE in the other), and small in both.
SHAPES = [(1, 1), (1, 9), (9, 1), (3, 90), (90, 3), (48, 40)]
ORIENTATION = 6  # EXIF: turn the stored image 90 degrees clockwise to show it
# TensorFlow's and Pillow's libjpeg builds upsample the chroma of tiny images differently; a
# wrong turn or flip would differ by up to 255 on these 8-colour images.
JPEG_TOLERANCE = 32
FORMATS = {  # kind -> suffix of the stored file (`write` says how each kind is made)
    "jpeg": ".jpg",
    "jpeg_exif": ".jpg",
    "png_rgb": ".png",
    "png_gray": ".png",
    "png_palette": ".png",
    "png_gray16": ".png",
    "png_rgb16": ".png",
    "png_rgba": ".png",
    "bmp": ".bmp",
    "gif": ".gif",
    "webp": ".webp",
}


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's: these tests build no Keras model, and a session clear (its garbage
    collection) would cost more than the test itself, over a hundred times."""
    yield


def colours(width, height, seed=0):
    """`(height, width, 3)` pixels of 8 exact colours (channels 0 or 255): no format alters them."""
    return np.random.default_rng(seed).choice([0, 255], (height, width, 3)).astype(np.uint8)


def write(path, kind, width, height):
    """Writes one file of `kind`; returns the RGB pixels a correct decoder gives, upright."""
    rgb = colours(width, height)
    gray = rgb[..., 0]
    if kind in ("jpeg", "jpeg_exif"):
        stored = Image.fromarray(rgb)
        if kind == "jpeg_exif":
            stored = stored.transpose(Image.ROTATE_90)  # turned back by orientation 6
            tags = Image.Exif()
            tags[0x0112] = ORIENTATION
            stored.save(path, quality=95, exif=tags)
        else:
            stored.save(path, quality=95)
        with Image.open(path) as written:  # JPEG is lossy: expect what Pillow decodes
            decoded = np.asarray(written.convert("RGB"))
        return np.rot90(decoded, -1) if kind == "jpeg_exif" else decoded
    if kind == "png_gray":
        Image.fromarray(gray).save(path)
        return np.repeat(gray[..., None], 3, axis=-1)
    if kind == "png_gray16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
        return np.repeat(gray[..., None], 3, axis=-1)
    if kind == "png_rgb16":
        from tests.test_data import png16

        png16(path, rgb.astype(np.uint16) * 257)
        return rgb
    if kind == "png_rgba":
        alpha = np.where(gray > 0, 255, 0).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
        return np.where(alpha[..., None] > 0, rgb, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    if kind == "png_palette":
        image = image.quantize(8)
    image.save(path, **({"lossless": True} if kind == "webp" else {}))
    return rgb


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """Every format x shape written once: `{(kind, shape): (path, upright RGB pixels)}`."""
    folder = tmp_path_factory.mktemp("small")
    files = {}
    for kind, suffix in FORMATS.items():
        for width, height in SHAPES:
            path = str(folder / f"{kind}_{width}x{height}{suffix}")
            files[kind, (width, height)] = path, write(path, kind, width, height)
    return files


@pytest.fixture(scope="module")
def bulk(small_files):
    """`{(route, crop): {path: pixels}}` from one `load_images` call per route and crop.

    Route `"tf"` is the `tf.data` pipeline (JPEG and plain PNG) with Pillow for the rest;
    `"pillow"` sends every file through Pillow, as for a file TensorFlow refuses; `"export"` is
    what a predictor decodes (`tltk.export.images.image_batch`).
    """
    paths = [path for path, _ in small_files.values()]
    inspect, loaded = images.inspect_file, {}
    for crop in (False, True):
        for route in ("tf", "pillow"):
            with pytest.MonkeyPatch.context() as patch:
                if route == "pillow":
                    patch.setattr(
                        images,
                        "inspect_file",
                        lambda path: inspect(path)._replace(route=images._PIL_ROUTE),
                    )
                pixels, kept, skipped = images.load_images(paths, SIZE, crop_to_aspect_ratio=crop)
            assert (kept, skipped) == (list(range(len(paths))), [])
            loaded[route, crop] = dict(zip(paths, pixels.numpy()))
        batch = image_batch(paths, (*SIZE, 3), crop_to_aspect_ratio=crop)
        loaded["export", crop] = dict(zip(paths, batch))
    return loaded


@pytest.mark.parametrize("crop", [False, True], ids=["stretch", "crop"])
@pytest.mark.parametrize("width, height", SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_small_file_loads_upscaled_on_every_route(small_files, bulk, kind, width, height, crop):
    path, upright = small_files[kind, (width, height)]
    expected = decode.resize(upright, SIZE, crop).numpy().astype(int)
    tolerance = JPEG_TOLERANCE if kind.startswith("jpeg") else 0
    single = images.load_image(path, SIZE, crop_to_aspect_ratio=crop)
    assert single.shape == (*SIZE, 3) and single.dtype == np.uint8
    assert np.abs(single - expected).max() <= tolerance
    np.testing.assert_array_equal(bulk["tf", crop][path], single)
    np.testing.assert_array_equal(bulk["export", crop][path], single)
    assert np.abs(bulk["pillow", crop][path] - expected).max() <= tolerance


def test_small_jpegs_load_at_224(tmp_path):
    """48x48 JPEGs for a 224x224 backbone raised a bare StopIteration in the decode planning."""
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (48, 48), colour).save(tmp_path / name / f"{i}.jpg")
        Image.new("RGB", (30, 1), colour).save(tmp_path / name / "strip.jpg", exif=_exif(6))
    (tmp_path / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    with pytest.warns(UserWarning, match="broken.jpg: corrupt image"):
        data = tltk.data.from_directory(tmp_path, image_size=(224, 224), validation_split=0.0)
    assert sum(data.class_counts["train"].values()) == 8
    assert [path.rsplit("/", 1)[-1] for path, _ in data.skipped] == ["broken.jpg"]
    pixels, labels = next(iter(data.train.unbatch().batch(8)))
    assert pixels.shape == (8, 224, 224, 3)
    for image, label in zip(pixels.numpy(), labels.numpy()):
        colour = (255, 0, 0) if data.class_names[label] == "red" else (0, 0, 255)
        assert np.abs(image - colour).max() <= 2


def test_jpeg_ratio_never_runs_out():
    assert decode.jpeg_ratio(48, 48, 1, (224, 224)) == 1
    assert decode.jpeg_ratio(1, 1, 6, (64, 64)) == 1
    assert decode.jpeg_ratio(0, 5, 1, (8, 8)) == 1
    assert decode.jpeg_ratio(1000, 2000, 1, (224, 448)) == 4
    assert decode.jpeg_ratio(1000, 2000, 6, (224, 448)) == 2  # turned upright, 2000 is the height


def test_bad_small_files_are_reported_by_name(tmp_path):
    good = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (9, 8, 7)).save(good)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:20])
    zero_height = tmp_path / "zero.jpg"
    Image.new("RGB", (4, 3)).save(zero_height)
    data = bytearray(zero_height.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 7] = b"\0\0"  # a frame of height 0, which no decoder takes
    zero_height.write_bytes(bytes(data))
    paths = [str(good), str(truncated), str(zero_height)]
    pixels, kept, skipped = images.load_images(paths, SIZE)
    assert kept == [0] and [path for path, _ in skipped] == paths[1:]
    assert pixels.numpy()[0].reshape(-1, 3).tolist() == [[9, 8, 7]] * (SIZE[0] * SIZE[1])
    for path in paths[1:]:
        with pytest.raises(images.ImageFileError, match="Cannot use image file"):
            images.load_image(path, SIZE)
        with pytest.raises(ValueError, match=path.rsplit("/", 1)[-1]):
            image_batch([path], (*SIZE, 3))


@pytest.mark.filterwarnings("ignore:`x` is uint16 with values up to")  # 16-bit on purpose
@pytest.mark.parametrize("height, width", [(1, 1), (1, 9), (9, 1), (3, 90)])
@pytest.mark.parametrize(
    "channels, dtype", [(3, "uint8"), (1, "uint8"), (4, "uint8"), (3, "float32"), (2, "uint16")]
)
def test_small_arrays_load_upscaled(height, width, channels, dtype):
    x = np.random.default_rng(0).integers(0, 256, (4, height, width, channels))
    x = (x * 257 if dtype == "uint16" else x).astype(dtype)
    for crop in (False, True):
        data = tltk.data.from_arrays(
            x,
            [0, 1, 0, 1],
            image_size=SIZE,
            validation_split=0.0,
            batch_size=4,
            crop_to_aspect_ratio=crop,
        )
        pixels, _ = next(iter(data.train))
        assert pixels.shape == (4, *SIZE, 3)
        if channels == 3:  # a predictor prepares arrays the same way (the batch is shuffled)
            batch = image_batch(x, (*SIZE, 3), crop_to_aspect_ratio=crop)
            for image in pixels.numpy():
                assert any(np.array_equal(image, row) for row in batch)


def _exif(orientation):
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags

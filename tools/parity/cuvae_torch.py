"""PyTorch reference of the cuvae convolutional VAE, plus a small safetensors reader/writer.

The module/parameter names here are the contract with cuvae: cuvae writes its weights under
exactly the ``state_dict()`` keys of :class:`CuvaeVAE`, in PyTorch layout.

Only the Python standard library, numpy and torch are used (the ``safetensors`` package is not
required). Works with torch 1.13 and torch 2.x.
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
FLAT_DIM = 64 * 7 * 7  # 3136
HIDDEN_DIM = 16


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, stride=2, padding=1)  # -> (B,32,14,14)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)  # -> (B,64,7,7)
        self.fc = nn.Linear(FLAT_DIM, HIDDEN_DIM)
        self.mu = nn.Linear(HIDDEN_DIM, latent_dim)
        self.logvar = nn.Linear(HIDDEN_DIM, latent_dim)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = torch.flatten(h, 1)  # (C,H,W) order
        h = F.relu(self.fc(h))
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.fc = nn.Linear(latent_dim, FLAT_DIM)
        self.deconv1 = nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1)
        self.deconv2 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
        self.out = nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1)

    def forward(self, z):
        h = F.relu(self.fc(z)).reshape(-1, 64, 7, 7)
        h = F.relu(self.deconv1(h))  # -> (B,64,14,14)
        h = F.relu(self.deconv2(h))  # -> (B,32,28,28)
        return self.out(h)  # logits (B,1,28,28)


class CuvaeVAE(nn.Module):
    """The Keras-example convolutional VAE, with cuvae's parameter names."""

    def __init__(self, latent_dim=2):
        super().__init__()
        latent_dim = int(latent_dim)
        if latent_dim < 1:
            raise ValueError("latent_dim must be >= 1, got %d" % latent_dim)
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim)
        self.decoder = Decoder(latent_dim)

    def encode(self, x):
        """x: (B,1,28,28) in [0,1] -> (mu, logvar), each (B,D)."""
        return self.encoder(x)

    def decode(self, z):
        """z: (B,D) -> logits (B,1,28,28); sigmoid(logits) is the image."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu, logvar, eps):
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x, eps):
        """Returns (logits, mu, logvar) using the externally supplied noise eps (B,D)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar


def expected_parameter_shapes(latent_dim):
    """The parameter names and shapes of the contract, in state_dict order."""
    d = int(latent_dim)
    return [
        ("encoder.conv1.weight", (32, 1, 3, 3)),
        ("encoder.conv1.bias", (32,)),
        ("encoder.conv2.weight", (64, 32, 3, 3)),
        ("encoder.conv2.bias", (64,)),
        ("encoder.fc.weight", (16, FLAT_DIM)),
        ("encoder.fc.bias", (16,)),
        ("encoder.mu.weight", (d, 16)),
        ("encoder.mu.bias", (d,)),
        ("encoder.logvar.weight", (d, 16)),
        ("encoder.logvar.bias", (d,)),
        ("decoder.fc.weight", (FLAT_DIM, d)),
        ("decoder.fc.bias", (FLAT_DIM,)),
        ("decoder.deconv1.weight", (64, 64, 3, 3)),
        ("decoder.deconv1.bias", (64,)),
        ("decoder.deconv2.weight", (64, 32, 3, 3)),
        ("decoder.deconv2.bias", (32,)),
        ("decoder.out.weight", (32, 1, 3, 3)),
        ("decoder.out.bias", (1,)),
    ]


def vae_loss(model, x, eps, beta=1.0):
    """Batch means (loss, recon, kl) of the cuvae objective.

    recon per image = BCE-with-logits summed over the 784 pixels (target x);
    kl per image    = -0.5 * sum_j (1 + logvar - mu^2 - exp(logvar));
    loss            = mean over images of (recon + beta * kl).
    """
    logits, mu, logvar = model(x, eps)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    loss = (recon + float(beta) * kl).mean()
    return loss, recon.mean(), kl.mean()


# ------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------
# code -> (numpy little-endian storage dtype, torch dtype, itemsize)
# BF16 is stored through int16 (numpy has no bfloat16) and reinterpreted in torch.
_DTYPES = {
    "F64": ("<f8", torch.float64, 8),
    "F32": ("<f4", torch.float32, 4),
    "F16": ("<f2", torch.float16, 2),
    "BF16": ("<i2", torch.bfloat16, 2),
    "I64": ("<i8", torch.int64, 8),
    "I32": ("<i4", torch.int32, 4),
    "I16": ("<i2", torch.int16, 2),
    "I8": ("i1", torch.int8, 1),
    "U8": ("u1", torch.uint8, 1),
    "BOOL": ("u1", torch.bool, 1),
}
_TORCH_TO_CODE = {v[1]: k for k, v in _DTYPES.items()}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _reject_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %r in safetensors header" % key)
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError("non-standard JSON constant %s in safetensors header" % name)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_header(buf, source):
    """Validates the header of the safetensors bytes `buf`; returns (entries, metadata, data_start).

    entries: list of (name, code, shape tuple, begin, end) with offsets relative to data_start.
    """
    size = len(buf)
    if size < 8:
        raise ValueError("%s: file too short (%d bytes) to hold the 8-byte header length"
                         % (source, size))
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    if n > size - 8:
        raise ValueError("%s: header length %d exceeds the %d bytes after the length field"
                         % (source, n, size - 8))
    if n > _MAX_HEADER_BYTES:
        raise ValueError("%s: header length %d is larger than the %d-byte limit"
                         % (source, n, _MAX_HEADER_BYTES))
    try:
        text = bytes(buf[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("%s: header is not valid UTF-8 (%s)" % (source, e)) from None
    try:
        header = json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                            parse_constant=_reject_constant)
    except ValueError as e:  # json.JSONDecodeError, or a duplicate key / NaN constant
        raise ValueError("%s: header is not valid JSON (%s)" % (source, e)) from None
    if not isinstance(header, dict):
        raise ValueError("%s: header is JSON %s, expected an object"
                         % (source, type(header).__name__))

    data_start = 8 + n
    data_len = size - data_start
    metadata = {}
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise ValueError("%s: __metadata__ must be an object" % source)
            for k, v in info.items():
                if not isinstance(v, str):
                    raise ValueError("%s: __metadata__[%r] must be a string, got %s"
                                     % (source, k, type(v).__name__))
            metadata = dict(info)
            continue
        where = "%s: tensor %r" % (source, name)
        if not name:
            raise ValueError("%s: empty tensor name" % source)
        if not isinstance(info, dict):
            raise ValueError("%s: entry must be an object" % where)
        keys = set(info)
        missing = {"dtype", "shape", "data_offsets"} - keys
        if missing:
            raise ValueError("%s: missing field(s) %s" % (where, ", ".join(sorted(missing))))
        extra = keys - {"dtype", "shape", "data_offsets"}
        if extra:
            raise ValueError("%s: unknown field(s) %s" % (where, ", ".join(sorted(extra))))
        code = info["dtype"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise ValueError("%s: unknown or unsupported dtype %r (supported: %s)"
                             % (where, code, ", ".join(sorted(_DTYPES))))
        shape = info["shape"]
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise ValueError("%s: shape must be a list of non-negative integers, got %r"
                             % (where, shape))
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets)):
            raise ValueError("%s: data_offsets must be a list of two integers, got %r"
                             % (where, offsets))
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise ValueError("%s: data_offsets [%d, %d] outside the %d-byte data area"
                             % (where, begin, end, data_len))
        nbytes = math.prod(shape) * _DTYPES[code][2]
        if end - begin != nbytes:
            raise ValueError("%s: data_offsets span %d bytes but shape %s x %s needs %d"
                             % (where, end - begin, shape, code, nbytes))
        entries.append((name, code, tuple(shape), begin, end))

    # The data area must be indexed exactly: no overlaps, no holes, no trailing bytes.
    pos = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin < pos:
            raise ValueError("%s: tensor %r data [%d, %d] overlaps a previous tensor"
                             % (source, name, begin, end))
        if begin > pos:
            raise ValueError("%s: unindexed bytes [%d, %d) in the data area before tensor %r"
                             % (source, pos, begin, name))
        pos = end
    if pos != data_len:
        raise ValueError("%s: data area is %d bytes but tensors cover only %d"
                         % (source, data_len, pos))
    return entries, metadata, data_start


def _decode_tensor(raw, code, shape):
    np_dtype, torch_dtype, _ = _DTYPES[code]
    arr = np.frombuffer(raw, dtype=np.dtype(np_dtype))
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = np.array(arr, copy=True).reshape(shape)  # own, writable memory
    if code == "BOOL":
        if arr.size and arr.max() > 1:
            raise ValueError("BOOL tensor holds a byte other than 0 or 1")
        return torch.from_numpy(arr).to(torch.bool)
    t = torch.from_numpy(arr)
    if code == "BF16":
        t = t.view(torch.bfloat16)
    return t


def load_safetensors(path):
    """Reads a safetensors file -> (dict name -> torch.Tensor, dict metadata str -> str).

    Raises ValueError with a clear message on any malformed content."""
    with open(path, "rb") as f:
        buf = f.read()
    return loads_safetensors(buf, source=str(path))


def loads_safetensors(buf, source="<bytes>"):
    """Like load_safetensors, from an in-memory bytes object."""
    mv = memoryview(buf)
    entries, metadata, data_start = _parse_header(mv, source)
    tensors = {}
    for name, code, shape, begin, end in entries:
        try:
            tensors[name] = _decode_tensor(mv[data_start + begin:data_start + end], code, shape)
        except ValueError as e:
            raise ValueError("%s: tensor %r: %s" % (source, name, e)) from None
    return tensors, metadata


def _encode_tensor(t):
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor):
        raise TypeError("expected a torch.Tensor or numpy array, got %s" % type(t).__name__)
    t = t.detach().cpu().contiguous()
    if t.dtype not in _TORCH_TO_CODE:
        raise ValueError("unsupported tensor dtype %s" % t.dtype)
    code = _TORCH_TO_CODE[t.dtype]
    if code == "BF16":
        t = t.view(torch.int16)
    elif code == "BOOL":
        t = t.to(torch.uint8)
    arr = t.numpy().astype(np.dtype(_DTYPES[code][0]), copy=False)
    return code, list(t.shape), arr.tobytes()


def dumps_safetensors(tensors, metadata=None):
    """Serialises {name: tensor} (+ metadata str -> str) to safetensors bytes.

    Tensors are written in sorted name order; the header is space-padded to a multiple of 8."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError("metadata keys and values must be strings: %r=%r" % (k, v))
        header["__metadata__"] = dict(metadata)
    chunks = []
    pos = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError("invalid tensor name %r" % (name,))
        code, shape, data = _encode_tensor(tensors[name])
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} and metadata (str -> str) to a safetensors file."""
    data = dumps_safetensors(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)

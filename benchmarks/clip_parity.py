"""Parity of `portrait_keras.models.clip` with open_clip: same weights, same inputs, same embeddings.

Not a CI test: it needs torch and open_clip_torch, which the package does not depend on. In a
throwaway virtual environment that also sees the project's Keras and TensorFlow:

    python -m venv --system-site-packages /tmp/clipvenv
    /tmp/clipvenv/bin/pip install torch torchvision open_clip_torch
    PYTHONPATH=. /tmp/clipvenv/bin/python benchmarks/clip_parity.py --config ViT-B-32

(Run with torch 2.14.1 and open_clip_torch 3.3.0 on the CPU: every relative difference about
1e-6 for ViT-B-32 and ViT-B-16-quickgelu.)

Steps: build open_clip's model with random weights (every tensor, LayerNorms and zero-initialised
biases included, moved off its initial value, so a mix-up of any two shows), save its state_dict
as `.npz`, convert it with `python -m portrait_keras.models.convert_clip`, load the result with
`clip_model`, and compare on the same inputs:

- image embeddings of random CLIP-normalised images at the config's 224×224;
- image embeddings at 256×128 (person crops): open_clip resizes the position embedding when
  loading (`resize_pos_embed`, antialiased bicubic), ours when building;
- text embeddings of prompts tokenised by `ClipTokenizer` from open_clip's own vocabulary file,
  whose ids must equal open_clip's tokenizer's (checked first);
- `logits_per_image` (similarity scaled by `exp(logit_scale)`).

Figure: relative difference = max |ours − open_clip| / max |open_clip| over each output. Exit 1
when one is above `--tolerance` (default 1e-4) or the token ids differ.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

PROMPTS = [
    "a photo of a man with a black backpack.",
    "A photo of a woman wearing a protective suit and a gas mask!",
    "person, 30-45 years old, carrying a bag; glasses: yes",
    "Ünïcödé café — 東京 😀 <b>&amp;</b>",
    "",
    "word " * 100,  # longer than the context: truncated with the end token kept
]


def perturb_(model, torch, seed):
    """Move every parameter off its initial value (LayerNorm 1/0 and zero biases included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            scale = 0.1 if param.ndim < 2 else 0.02
            param.add_(scale * noise)


def relative_difference(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="ViT-B-32", help="open_clip model name (default: %(default)s)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest relative difference (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=2, help="images per comparison (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import open_clip
        import torch
    except ImportError as e:
        print(f"error: needs torch and open_clip_torch ({e}); see the module docstring", file=sys.stderr)
        return 2
    from portrait_keras.data.clip_tokenizer import ClipTokenizer
    from portrait_keras.models.clip import clip_model
    from portrait_keras.models.convert_clip import main as convert_main

    torch.manual_seed(args.seed)
    reference = open_clip.create_model(args.config).eval()
    perturb_(reference, torch, args.seed)
    state_dict = {k: v.detach().float().numpy() for k, v in reference.state_dict().items()}
    print(f"open_clip {open_clip.__version__} {args.config}: {len(state_dict)} tensors, torch {torch.__version__}")

    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        npz, weights = os.path.join(tmp, "state.npz"), os.path.join(tmp, "clip.weights.h5")
        np.savez(npz, **state_dict)
        if convert_main([npz, weights, "--config", args.config]) != 0:
            return 1
        ours = clip_model(args.config, weights=weights)
        activation = type(reference.transformer.resblocks[0].mlp.gelu).__name__
        if ours.quick_gelu != (activation == "QuickGELU"):
            print(f"error: open_clip's {args.config} uses {activation}, ours quick_gelu={ours.quick_gelu}")
            return 1

        tokenizer = ClipTokenizer(open_clip.tokenizer.default_bpe())
        token_ids = tokenizer(PROMPTS)
        reference_ids = open_clip.get_tokenizer(args.config)(PROMPTS).numpy()
        same_ids = np.array_equal(token_ids, reference_ids)
        failed |= not same_ids
        print(f"token ids of {len(PROMPTS)} prompts equal open_clip's: {same_ids}")

        rng = np.random.default_rng(args.seed)
        size = ours.image_size
        images = rng.standard_normal((args.batch, *size, 3)).astype(np.float32)
        with torch.no_grad():
            ref_image = reference.encode_image(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
            ref_text = reference.encode_text(torch.from_numpy(token_ids.astype(np.int64))).numpy()
            ref_logits = reference.logit_scale.exp().item() * (_unit(ref_image) @ _unit(ref_text).T)
        out = ours({"images": images, "token_ids": token_ids})
        rows += [
            ("image embeddings 224x224", relative_difference(out["image_embeddings"], ref_image)),
            ("text embeddings", relative_difference(out["text_embeddings"], ref_text)),
            ("logits_per_image", relative_difference(out["logits_per_image"], ref_logits)),
        ]

        # Person crops: another grid, position embedding resized by both.
        crop = (256, 128)
        resized = open_clip.create_model(args.config, force_image_size=crop).eval()
        resized_state = {k: v.clone() for k, v in reference.state_dict().items()}
        open_clip.model.resize_pos_embed(resized_state, resized)
        resized.load_state_dict(resized_state)
        crops = rng.standard_normal((args.batch, *crop, 3)).astype(np.float32)
        with torch.no_grad():
            ref_crops = resized.encode_image(torch.from_numpy(crops.transpose(0, 3, 1, 2))).numpy()
        ours_crops = clip_model(args.config, input_shape=(*crop, 3), weights=weights)
        rows.append(("image embeddings 256x128", relative_difference(ours_crops.encode_image(crops), ref_crops)))

    width = max(len(name) for name, _ in rows)
    print(f"{'output':<{width}}  max rel. diff  (tolerance {args.tolerance:g})")
    for name, value in rows:
        flag = "" if value <= args.tolerance else "  ABOVE"
        failed |= value > args.tolerance
        print(f"{name:<{width}}  {value:.2e}{flag}")
    print("max relative difference:", f"{max(v for _, v in rows):.2e}")
    return 1 if failed else 0


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


if __name__ == "__main__":
    sys.exit(main())

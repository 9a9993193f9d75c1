"""`portrait-keras convert-clip STATE.npz OUTPUT.weights.h5`: an open_clip / OpenAI CLIP state_dict
(exported to `.npz`, see `models.convert_clip`) → the `.weights.h5` that `search --text --clip`,
`clip_model(..., weights=)` and the `vit_b16` backbone load."""

import sys

from portrait_keras.commands import _common

EXPORT_HELP = (
    "export it where torch is installed: np.savez('clip_vit_b_16.npz', **{k: v.float().numpy() for k, v in "
    "m.state_dict().items()}) with m = open_clip.create_model('ViT-B-16-quickgelu', pretrained='openai')"
)


def build_parser():
    p = _common.parser(
        "convert-clip",
        "Convert an open_clip / OpenAI CLIP (ViT) state_dict saved as .npz into a ClipModel .weights.h5 file; "
        "every key and shape is checked. Nothing is downloaded: " + EXPORT_HELP + ".",
        [
            "portrait-keras convert-clip clip_vit_b_16.npz clip_vit_b_16.weights.h5 --config ViT-B-16",
            "portrait-keras convert-clip clip_vit_b_32.npz clip_vit_b_32.weights.h5",
        ],
    )
    p.add_argument("state", metavar="STATE.npz", help="the state_dict as .npz (np.savez of name -> array)")
    p.add_argument("output", metavar="OUTPUT", help="output path, ending in .weights.h5")
    p.add_argument(
        "--config",
        default="ViT-B-32",
        help="sizes of the checkpoint: ViT-B-32, ViT-B-16 (a -quickgelu name gives the same file) "
        "(default: %(default)s)",
    )
    return p


def run(args):
    from portrait_keras.errors import InputError
    from portrait_keras.models.convert_clip import convert_clip
    from portrait_keras.models.convert_hrnet import load_npz_state_dict

    try:
        state_dict = load_npz_state_dict(args.state, EXPORT_HELP)
        model = convert_clip(state_dict, args.output, args.config)
    except ValueError as e:
        raise InputError(f"{args.state}: {e}" if args.state not in str(e) else str(e)) from None
    except OSError as e:  # the output could not be written
        raise InputError(f"{args.output}: cannot write it ({e.strerror or e})") from None
    print(f"{args.output}: {len(model.weights)} variables ({model.count_params():,} values) of CLIP {args.config}")
    return 0


def main(argv=None):
    return _common.run_reporting_errors(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

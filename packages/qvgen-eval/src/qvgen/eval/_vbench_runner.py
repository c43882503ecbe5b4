"""Runs the `vbench` package on a folder of videos. Executed as a script by the target interpreter.

Standalone on purpose (stdlib + vbench only): the interpreter is usually a separate venv that has vbench
and its torch/torchvision pair but not qvgen. Arguments come as one JSON object in argv[1]; the path of
VBench's result file is printed on the last line of stdout.
"""

import json
import os
import sys


def main() -> int:
    # Running a script puts its folder first on sys.path, where qvgen's own vbench.py would shadow the package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    args = json.loads(sys.argv[1])
    os.environ["VBENCH_CACHE_DIR"] = args["cache_dir"]
    import torch
    from vbench import VBench

    full_info = args["full_info"]
    if full_info is None:
        import vbench

        full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
    bench = VBench(torch.device(args["device"]), full_info, args["output_dir"])
    bench.evaluate(
        videos_path=args["videos_dir"],
        name=args["name"],
        prompt_list=args["prompt_list"],
        dimension_list=args["dimensions"],
        local=True,
        read_frame=False,
        mode=args["mode"],
        imaging_quality_preprocessing_mode=args["imaging_quality_preprocessing_mode"],
    )
    print(os.path.join(args["output_dir"], args["name"] + "_eval_results.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

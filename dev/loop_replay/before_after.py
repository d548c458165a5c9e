"""Two sets of recordings of the same runs (e.g. before / after a VO change), side by side from each
recording's live run: VO and final ATE, tracked %, relocalisations / new maps, loops.
Usage: python before_after.py 'BEFORE/*.pkl' 'AFTER/*.pkl'"""
import glob, pickle, sys

NO_POSE = ("lost", "relocalizing")


def row(path):
    with open(path, "rb") as f:
        r = pickle.load(f)
    st = list(r["states"])
    tracked = 100.0 * (1 - sum(s in NO_POSE for s in st) / len(st))
    return (r["scene"], r["seed"], r["sensor"]), dict(
        vo=1e3 * r["live"]["vo"], final=1e3 * r["live"]["final"], tracked=tracked, loops=r["live"]["loops"],
        reloc=st.count("relocalized"), new_maps=st.count("reinitialized"))


if __name__ == "__main__":
    before = dict(row(p) for p in glob.glob(sys.argv[1]))
    after = dict(row(p) for p in glob.glob(sys.argv[2]))
    print("| run | VO ATE mm before -> after | final mm before -> after | tracked % before -> after "
          "| relocalisations / new maps after | loops after |")
    print("|---|---|---|---|---|---|")
    for key in sorted(set(before) & set(after)):
        b, a = before[key], after[key]
        print(f"| {key[0]} s{key[1]} {key[2]} | {b['vo']:.2f} -> {a['vo']:.2f} | {b['final']:.2f} -> {a['final']:.2f} "
              f"| {b['tracked']:.1f} -> {a['tracked']:.1f} | {a['reloc']} / {a['new_maps']} | {a['loops']} |")

"""``distilvit cache``: inspect and clear the frozen-encoder feature cache."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="inspect or clear the encoder feature cache",
        description="The feature cache holds frozen-encoder features written by `distilvit train` "
        "(one folder per encoder setting, the key). See docs/feature-cache.md.",
    )
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="show location, keys, entries, feature shape, dtype and size on disk",
                              description="Show the feature cache: its location and, per key (encoder setting), "
                              "the encoder, entries, feature shape, dtype and size on disk.")
    info.add_argument("--dir", default=None,
                      help="feature cache folder (default: $DISTILVIT_FEATURE_CACHE, else $DISTILVIT_CACHE/features, else ~/.cache/distilvit/features)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(run=run_info)
    clear = actions.add_parser("clear", help="delete all cached features, or those of the given keys",
                               description="Delete cached features without asking: every key, or only the "
                               "KEYs given. Prints what was removed.")
    clear.add_argument("keys", nargs="*", metavar="KEY", help="keys to delete, as shown by `cache info` (default: all)")
    clear.add_argument("--dir", default=None,
                       help="feature cache folder (default: $DISTILVIT_FEATURE_CACHE, else $DISTILVIT_CACHE/features, else ~/.cache/distilvit/features)")
    clear.set_defaults(run=run_clear)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run_info(args) -> int:
    import json

    from distilvit.features.store import list_stores
    from distilvit.paths import feature_cache_root

    root = feature_cache_root(args.dir)
    keys = [store.info() for store in list_stores(root)]
    total = sum(k["size_bytes"] for k in keys)
    if args.json:
        print(json.dumps({"location": str(root), "size_bytes": total, "keys": keys}, indent=2))
        return 0
    print(f"feature cache: {root} ({len(keys)} key(s), {_megabytes(total)})")
    for k in keys:
        if k["problem"]:
            print(f"  {k['key']}  unusable ({_megabytes(k['size_bytes'])}): {k['problem']}")
            continue
        shape = "x".join(str(n) for n in k["feature_shape"] or [])
        print(f"  {k['key']}  {k['entries']} entries of {shape} {k['dtype']}, {_megabytes(k['size_bytes'])}, "
              f"encoder {k['encoder'] or '(unnamed)'}, created {k['created']}")
    return 0


def run_clear(args) -> int:
    from distilvit.errors import DistilViTError
    from distilvit.features.store import list_stores
    from distilvit.paths import feature_cache_root

    root = feature_cache_root(args.dir)
    stores = {store.name: store for store in list_stores(root)}
    unknown = [key for key in args.keys if key not in stores]
    if unknown:
        known = ", ".join(stores) or "none"
        raise DistilViTError(f"no cache key {', '.join(unknown)} in {root} (keys there: {known}); "
                             "see `distilvit cache info`.")
    chosen = [stores[key] for key in args.keys] if args.keys else list(stores.values())
    for store in chosen:
        info = store.info()
        store.remove()
        print(f"removed {info['key']} ({info['encoder'] or 'unnamed encoder'}, {info['entries']} entries, "
              f"{_megabytes(info['size_bytes'])})")
    if not chosen:
        print(f"nothing to remove in {root}")
    return 0


#!/usr/bin/env python3
"""Checks the Kubernetes manifests of this folder (or of the folder given), strictly.

- kustomization.yaml lists every manifest of the folder and only files that exist;
- every document of every manifest validates against the OpenAPI schemas of one pinned Kubernetes
  version with kubernetes-validate in strict mode (an unknown field is an error, not ignored);
- every document has a kind and a name, and no two documents share kind and name.

Usage: python3 deploy/k8s/check.py [DIR] [--kubernetes-version 1.33.0]. Exit 1 on any problem.
"""
import argparse
import pathlib
import sys

import kubernetes_validate
import yaml

# The Kubernetes version the manifests are written for (the oldest we support; newer ones accept them).
KUBERNETES_VERSION = "1.33.0"


def check(folder: pathlib.Path, version: str) -> list[str]:
    problems: list[str] = []
    kfile = folder / "kustomization.yaml"
    if not kfile.exists():
        return [f"{kfile}: missing"]
    kust = yaml.safe_load(kfile.read_text()) or {}
    if kust.get("kind") != "Kustomization":
        problems.append(f"{kfile}: kind is {kust.get('kind')!r}, not 'Kustomization'")
    listed = kust.get("resources") or []
    for r in listed:
        if not (folder / r).is_file():
            problems.append(f"{kfile}: resource {r} does not exist")
    manifests = sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
    for m in manifests:
        if m not in listed:
            problems.append(f"{kfile}: {m} is not listed in resources")

    seen: dict[tuple[str, str], str] = {}
    for name in manifests:
        path = folder / name
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{path}: not YAML: {e}")
            continue
        if not docs:
            problems.append(f"{path}: no documents")
        for i, doc in enumerate(docs):
            where = f"{path} document {i + 1}"
            if not isinstance(doc, dict) or not doc.get("kind"):
                problems.append(f"{where}: not a Kubernetes object (no kind)")
                continue
            ident = (doc["kind"], (doc.get("metadata") or {}).get("name", ""))
            if not ident[1]:
                problems.append(f"{where}: {ident[0]} has no metadata.name")
            elif ident in seen:
                problems.append(f"{where}: {ident[0]}/{ident[1]} is also defined in {seen[ident]}")
            else:
                seen[ident] = str(path)
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                field = ".".join(str(p) for p in e.path)
                problems.append(f"{where}: {ident[0]}/{ident[1]}: {field or '(root)'}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                problems.append(f"{where}: {ident[0]}/{ident[1]}: no schema in Kubernetes {version}: {e}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=str(pathlib.Path(__file__).resolve().parent))
    ap.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    a = ap.parse_args()
    problems = check(pathlib.Path(a.dir), a.kubernetes_version)
    for p in problems:
        print(p)
    if problems:
        print(f"check: {len(problems)} problem(s) against Kubernetes {a.kubernetes_version} (strict)")
        return 1
    print(f"check: ok: {a.dir} against Kubernetes {a.kubernetes_version} (strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the third-party requirements of fedfleet packages, one per line, for pip -r.

Images install these before copying the source, so code changes do not
re-download TensorFlow. Usage: python requirements.py shared/pyproject.toml ...
"""

import sys

import tomllib


def main() -> None:
    """Print every dependency that is not itself a fedfleet package."""
    for path in sys.argv[1:]:
        with open(path, "rb") as handle:
            for req in tomllib.load(handle)["project"]["dependencies"]:
                if not req.startswith("fedfleet-"):
                    print(req)


if __name__ == "__main__":
    main()

"""The ``files`` kind: arbitrary files (local paths or http(s) URLs with a sha256) into a plain tree."""

from bundler.kinds.base import Kind, connected_side, enclave_side

KIND = Kind(
    name="files",
    check_section=connected_side("bundler.kinds.files.source", "check_section"),
    declare=connected_side("bundler.kinds.files.source", "declare"),
    target=enclave_side("bundler.kinds.files.target", "FilesTarget"),
    summary="arbitrary files (ISOs, yum trees, tools) from local paths or URLs into <enclave>/files/",
)

"""The ``files`` kind: arbitrary files (local paths or http(s) URLs with a sha256) into a plain tree."""

from bundler.kinds.base import Kind
from bundler.kinds.files.source import check_section, declare
from bundler.kinds.files.target import FilesTarget

KIND = Kind(
    name="files",
    check_section=check_section,
    declare=declare,
    target=FilesTarget,
    summary="arbitrary files (ISOs, yum trees, tools) from local paths or URLs into <enclave>/files/",
)

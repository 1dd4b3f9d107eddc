"""Input images of a create request: fetched or decoded, checked, and stored before the row exists.

Each ImageRef becomes one stored blob key: the `source` of an edit is input 0, references follow in
order. Bytes go to `inputs/<generation id>/<n>` before the generation row is inserted, so a crash
in between leaves orphan blobs only, never a row that points at nothing. A `generation_id`
reference reuses the earlier generation's output key; no bytes are copied.
"""

from __future__ import annotations

from daguerre.blobs import BlobStore
from daguerre.errors import ApiError
from daguerre.media import decode_base64
from daguerre.store import Store
from daguerre.store.schema import input_key
from daguerre.wire import Detail, GenerationCreate, ImageRef, State, parse_uuid


def _refs(create: GenerationCreate) -> list[tuple[str, ImageRef]]:
    refs = [("source", create.source)] if create.source is not None else []
    refs += [(f"image_ref[{i}]", ref) for i, ref in enumerate(create.image_ref or [])]
    return refs


def ingest_inputs(
    create: GenerationCreate, generation_id: str, account_id: str, store: Store, blobs: BlobStore
) -> tuple[str, ...]:
    keys: list[str] = []
    for index, (path, ref) in enumerate(_refs(create)):
        if ref.generation_id is not None:
            keys.append(_generation_output(ref.generation_id, account_id, path, store))
            continue
        if ref.file_id is not None:
            raise ApiError(400, Detail.ref_file_not_found(path))
        if ref.url is not None:
            raise ApiError(503, Detail.URL_INGESTION_OFF)
        assert ref.data is not None and ref.media_type is not None
        if not ref.media_type.lower().startswith("image/"):
            raise ApiError(422, Detail.ref_not_image(path))
        data = decode_base64(ref.data, path)
        key = input_key(generation_id, index)
        blobs.put(key, data, ref.media_type)
        keys.append(key)
    return tuple(keys)


def _generation_output(generation_id: str, account_id: str, path: str, store: Store) -> str:
    canonical = parse_uuid(generation_id)
    record = store.generations.get(canonical, account_id=account_id) if canonical else None
    if record is None:
        raise ApiError(400, Detail.ref_generation_not_found(path))
    if record.state != State.COMPLETED or not record.output_keys:
        raise ApiError(400, Detail.ref_generation_not_completed(path))
    return record.output_keys[0]

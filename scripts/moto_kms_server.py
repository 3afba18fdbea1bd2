#!/usr/bin/env python3
"""moto's server (`moto_server`), plus the KMS key-state checks that moto lacks.

Real AWS KMS refuses Encrypt, Decrypt, GenerateDataKey and ReEncrypt with DisabledException
while a key is disabled, and with KMSInvalidStateException while it is pending deletion or
pending import. moto (5.2) records the key state but does not enforce it. The AWS provider's
tests check that a disabled key gives a clear error and that nothing is lost once it is enabled
again, so this wrapper adds exactly those checks, then runs moto's own server.

Usage is moto_server's: python3 scripts/moto_kms_server.py -H 127.0.0.1 -p PORT
"""

import sys

from moto.core.exceptions import JsonRESTError
from moto.kms import models
from moto.server import main


class DisabledException(JsonRESTError):
    code = 400

    def __init__(self, arn: str) -> None:
        super().__init__("DisabledException", f"{arn} is disabled.")


class KMSInvalidStateException(JsonRESTError):
    code = 400

    def __init__(self, arn: str, state: str) -> None:
        super().__init__(
            "KMSInvalidStateException", f"{arn} is {state} and cannot be used."
        )


def _check_state(backend: "models.KmsBackend", key_id: str) -> None:
    key = backend.keys.get(key_id)
    if key is None:
        return  # moto answers NotFoundException itself
    if key.key_state == "Disabled":
        raise DisabledException(key.arn)
    if key.key_state != "Enabled":
        raise KMSInvalidStateException(key.arn, key.key_state)


_encrypt = models.KmsBackend.encrypt
_decrypt = models.KmsBackend.decrypt


def _checked_encrypt(self, key_id, plaintext, encryption_context):  # type: ignore[no-untyped-def]
    # GenerateDataKey and ReEncrypt go through encrypt as well.
    _check_state(self, self.any_id_to_key_id(key_id))
    return _encrypt(
        self, key_id=key_id, plaintext=plaintext, encryption_context=encryption_context
    )


def _checked_decrypt(self, ciphertext_blob, encryption_context, key_id=None):  # type: ignore[no-untyped-def]
    plaintext, arn = _decrypt(
        self,
        ciphertext_blob=ciphertext_blob,
        encryption_context=encryption_context,
        key_id=key_id,
    )
    _check_state(self, self.get_key_id(arn))
    return plaintext, arn


models.KmsBackend.encrypt = _checked_encrypt  # type: ignore[method-assign]
models.KmsBackend.decrypt = _checked_decrypt  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])

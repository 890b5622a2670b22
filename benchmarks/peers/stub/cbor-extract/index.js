// cbor-x loads this optionally and falls back to pure JavaScript when it throws.
throw new Error("cbor-extract (native) is not installed")

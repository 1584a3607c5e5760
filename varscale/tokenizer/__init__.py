"""The study's tokenizer and its token cache: trained once, encoded once, read by every cell.

- ``checkpoint.py``  identity and loading: ``tokenizer_hash`` (of the weights),
                     ``config_hash`` (of what training depends on), ``load_tokenizer``,
                     ``existing_complete``
- ``train.py``       ``train_tokenizer``: the multi-scale VQVAE -> ``tokenizer/vqvae.pt``
- ``cache.py``       ``build_token_cache`` / ``TokenCache``: every image -> K index maps,
                     ``tokens/*.npy`` + ``meta.json`` (memory-mapped by the trainer)

``train`` and ``cache`` both import ``checkpoint`` and never each other. Nothing is imported
here, so ``varscale.tokenizer.cache`` stays free of torch until it encodes.
"""

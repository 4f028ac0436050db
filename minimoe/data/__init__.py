"""The bundled multi-domain corpus and the character-level data pipeline.

    tokens = CharTokenizer().encode("12 + 30 = 42")
    train, val = split(load_corpus())
    x, y, d = BatchSampler(train.ids, train.domains, batch_size=32, context=128, seed=0).sample()

Regenerate the corpus files with `python -m minimoe.data.make_corpus`.
"""
from minimoe.data.corpus import Corpus, load_corpus, split
from minimoe.data.sampler import BatchSampler, eval_batches
from minimoe.data.tokenizer import CharTokenizer

__all__ = ["CharTokenizer", "Corpus", "load_corpus", "split", "BatchSampler", "eval_batches"]

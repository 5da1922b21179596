"""DeepDist's README example, word vectors, on a generated corpus (no download).

The model is a plain Python object whose state is numpy arrays held in its attributes, like
gensim's Word2Vec in DeepDist's README: each partition trains its copy in place on its
sentences (skip-gram with negative sampling) and returns how far its vectors moved; the driver's
``descent`` adds that to its own copy in place (``model.syn0 += update["syn0"]``).

    python jobs/train_word_vectors.py                      # classic local session
    python jobs/train_word_vectors.py --remote sc://host   # Spark Connect (or SPARK_REMOTE)

The corpus: ``--topics`` topics of ``--words`` words each; every sentence draws its words from
one topic. Trained vectors should put each word's nearest neighbour in its own topic; the last
line printed is that share.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np


class WordVectors:
    """Skip-gram with negative sampling, numpy only; ``syn0``/``syn1neg`` are the state."""

    def __init__(self, vocabulary: list[str], size: int = 16, window: int = 2, negative: int = 3,
                 alpha: float = 0.05, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.vocab = {word: i for i, word in enumerate(vocabulary)}  # not state: no arrays
        self.index2word = list(vocabulary)
        self.syn0 = ((rng.random((len(vocabulary), size)) - 0.5) / size).astype(np.float32)
        self.syn1neg = np.zeros((len(vocabulary), size), np.float32)
        self.window, self.negative, self.alpha, self.seed = window, negative, alpha, seed

    def train(self, sentences) -> int:
        """One pass of SGD over ``sentences`` (lists of words), in place; returns the words."""
        rng = np.random.default_rng(self.seed + len(sentences))
        seen = 0
        for sentence in sentences:
            ids = [self.vocab[w] for w in sentence if w in self.vocab]
            seen += len(ids)
            for pos, center in enumerate(ids):
                for ctx in ids[max(0, pos - self.window):pos] + ids[pos + 1:pos + 1 + self.window]:
                    targets = np.concatenate([[ctx], rng.integers(0, len(self.vocab),
                                                                  self.negative)])
                    labels = np.zeros(len(targets), np.float32)
                    labels[0] = 1.0
                    vector = self.syn0[center]
                    scores = 1.0 / (1.0 + np.exp(-(self.syn1neg[targets] @ vector)))
                    g = (labels - scores) * self.alpha
                    self.syn0[center] += g @ self.syn1neg[targets]
                    np.add.at(self.syn1neg, targets, np.outer(g, vector))
        return seen

    def most_similar(self, word: str) -> str:
        unit = self.syn0 / np.linalg.norm(self.syn0, axis=1, keepdims=True)
        scores = unit @ unit[self.vocab[word]]
        scores[self.vocab[word]] = -np.inf
        return self.index2word[int(np.argmax(scores))]


def gradient(model, rows):  # on executors: DeepDist's README, verbatim in spirit
    syn0, syn1neg = model.syn0.copy(), model.syn1neg.copy()
    model.train([list(row.words) for row in rows])
    return {"syn0": model.syn0 - syn0, "syn1neg": model.syn1neg - syn1neg}


def descent(model, update):  # on the driver, in place
    model.syn0 += update["syn0"]
    model.syn1neg += update["syn1neg"]


def corpus(topics: int, words: int, sentences: int, length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocabulary = [f"t{t}w{w}" for t in range(topics) for w in range(words)]
    rows = [[f"t{topic}w{w}" for w in rng.integers(0, words, length)]
            for topic in rng.integers(0, topics, sentences)]
    return vocabulary, rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--topics", type=int, default=4)
    p.add_argument("--words", type=int, default=8, help="words per topic")
    p.add_argument("--sentences", type=int, default=800)
    p.add_argument("--length", type=int, default=8, help="words per sentence")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--remote", help="a Spark Connect server, sc://host:port (default: the "
                   "SPARK_REMOTE variable; neither: a classic session)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from sparkdownpour import DeepDist
    from sparkdownpour.session import get_or_create_session, quiet_spark_logs

    spark = get_or_create_session("sparkdownpour-word-vectors", remote=args.remote)
    quiet_spark_logs(spark)
    vocabulary, sentences = corpus(args.topics, args.words, args.sentences, args.length)
    frame = spark.createDataFrame([(s,) for s in sentences], "words array<string>") \
        .repartition(args.partitions).cache()
    model = WordVectors(vocabulary)
    with DeepDist(model) as dd:
        for number in range(1, args.passes + 1):
            stats = dd.train(frame, gradient, descent)
            print(f"pass {number}: {stats['rows']} sentences, {stats['updates']} updates, "
                  f"{stats['seconds']:.1f} s")
    same = np.mean([model.most_similar(w).split("w")[0] == w.split("w")[0] for w in vocabulary])
    print(f"nearest neighbour in the same topic: {same:.2f} of {len(vocabulary)} words")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

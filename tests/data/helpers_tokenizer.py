"""A word-level tokenizer built in memory, so collator tests can count tokens by hand.

Every whitespace-separated word is one token; ids 0-2 are <unk>, <s>, </s>. No pad token is set,
like GPT-2 and LLaMA tokenizers, so the tests also cover the pad = EOS fallback.
"""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]


def word_tokenizer(words: str = "") -> PreTrainedTokenizerFast:
    vocabulary = SPECIALS + sorted(set(words.split()))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")

"""The word-level tokenizer shared by the toy OWL text encoder and the toy LLaVA language model.

Fixed vocabulary built from code, so the ids never depend on data. ``</s>`` takes the highest id because
OWL-ViT's text model pools at ``argmax(input_ids)`` (it assumes CLIP's end-of-text is the last id).
"""

from __future__ import annotations

from owlens.toyworld.defects import TRAITS
from owlens.toyworld.world import COLOURS, SHAPES, SIZES

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "IMAGE_TOKEN",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "build_tokenizer",
    "vocabulary",
]

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, IMAGE_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<s>", "<image>", "</s>"

# Every word that text.py can produce, and the answer words; order fixes the ids.
_FUNCTION_WORDS = (
    "yes", "no", "and", ".", ",", "?", ":", "a", "an", "photo", "of", "the", "image", "what", "is", "in",
    "there", "user", "assistant", "from", "one", "to", "ten", "how", "shape", "shapes",
)
_NUMBERS = tuple(str(i) for i in range(1, 11))


def vocabulary() -> dict[str, int]:
    """token -> id: <pad>=0, <unk>=1, <s>=2, <image>=3, the words, then </s> last (highest id)."""
    tokens = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, IMAGE_TOKEN]
    for word in (*_FUNCTION_WORDS, *_NUMBERS, *SHAPES, *COLOURS, *SIZES, *TRAITS):
        if word not in tokens:
            tokens.append(word)
    tokens.append(EOS_TOKEN)
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer():
    """A ``PreTrainedTokenizerFast``: lower case, whitespace/punctuation split, ``<s> ... </s>`` added.

    LM prompts carry ``<s>`` themselves (``text.PROMPT_TEMPLATE``): tokenise them with
    ``add_special_tokens=False``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Special tokens are matched on the raw text before splitting, so "<image><image>" is two tokens.
    specials = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, IMAGE_TOKEN, EOS_TOKEN)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN]), (EOS_TOKEN, vocab[EOS_TOKEN])],
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="right",
    )

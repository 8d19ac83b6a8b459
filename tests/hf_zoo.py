"""The 48 Hugging Face architectures of issue 22 (49 cases: Llama tied and untied) as tiny random configs
(2 layers, hidden 64), each saved with ``save_pretrained`` and audited with no spec (tests/kernel/test_hf_zoo.py).
Nothing is downloaded: every model is built from its config class with a fixed seed."""

from __future__ import annotations

V = 96  # vocabulary of the tiny text models
_ATT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "vocab_size": V, "max_position_embeddings": 64}
_DEC = {**_ATT, "num_key_value_heads": 2, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
_ENC = {**_ATT, "num_labels": 3, "pad_token_id": 0, "type_vocab_size": 1}
_IMG = {"num_labels": 3, "num_channels": 3, "image_size": 32}
_VIT = {**_ATT, **_IMG, "patch_size": 8}
_STAGES = {**_IMG, "hidden_sizes": [32, 64], "depths": [1, 2], "num_stages": 2, "num_labels": 3}

#: name -> (class, config fields, data kind: "lm" (B, T) ids = labels, "cls" ids + class labels, "img")
ZOO = {
    "llama": ("LlamaForCausalLM", _DEC, "lm"),
    "llama_tied": ("LlamaForCausalLM", {**_DEC, "tie_word_embeddings": True}, "lm"),
    "qwen2_tied": ("Qwen2ForCausalLM", {**_DEC, "tie_word_embeddings": True}, "lm"),
    "qwen3": ("Qwen3ForCausalLM", {**_DEC, "head_dim": 16}, "lm"),
    "qwen3_moe": ("Qwen3MoeForCausalLM", {**_DEC, **_MOE, "head_dim": 16}, "lm"),
    "qwen2_moe": ("Qwen2MoeForCausalLM", {**_DEC, **_MOE, "shared_expert_intermediate_size": 32}, "lm"),
    "qwen3_next": ("Qwen3NextForCausalLM", {**_DEC, **_MOE, "head_dim": 16, "shared_expert_intermediate_size": 32,
                                            "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                                            "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                                            "layer_types": ["linear_attention", "full_attention"]}, "lm"),
    "gemma": ("GemmaForCausalLM", {**_DEC, "head_dim": 16}, "lm"),
    "gemma2": ("Gemma2ForCausalLM", {**_DEC, "head_dim": 16}, "lm"),
    "gemma3": ("Gemma3ForCausalLM", {**_DEC, "head_dim": 16}, "lm"),
    "mistral": ("MistralForCausalLM", _DEC, "lm"),
    "mixtral": ("MixtralForCausalLM", {**_DEC, "num_local_experts": 4, "num_experts_per_tok": 2}, "lm"),
    "phi": ("PhiForCausalLM", _DEC, "lm"),
    "phi3": ("Phi3ForCausalLM", _DEC, "lm"),
    "gpt_oss": ("GptOssForCausalLM", {**_DEC, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16,
                                      "layer_types": ["sliding_attention", "full_attention"]}, "lm"),
    "deepseek_v3": ("DeepseekV3ForCausalLM", {**_DEC, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                              "moe_intermediate_size": 32, "n_group": 1, "topk_group": 1,
                                              "first_k_dense_replace": 1, "kv_lora_rank": 16, "q_lora_rank": 32,
                                              "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16},
                    "lm"),
    "granite": ("GraniteForCausalLM", _DEC, "lm"),
    "stablelm": ("StableLmForCausalLM", _DEC, "lm"),
    "smollm3": ("SmolLM3ForCausalLM", _DEC, "lm"),
    "olmo2": ("Olmo2ForCausalLM", _DEC, "lm"),
    "cohere": ("CohereForCausalLM", _DEC, "lm"),
    "starcoder2": ("Starcoder2ForCausalLM", _DEC, "lm"),
    "gpt2": ("GPT2LMHeadModel", {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": V, "n_positions": 64}, "lm"),
    "gptj": ("GPTJForCausalLM", {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": V, "n_positions": 64,
                                 "rotary_dim": 8}, "lm"),
    "gpt_neo": ("GPTNeoForCausalLM", {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "vocab_size": V,
                                      "max_position_embeddings": 64, "attention_types": [[["global", "local"], 1]]},
                "lm"),
    "gpt_neox": ("GPTNeoXForCausalLM", _ATT, "lm"),
    "opt": ("OPTForCausalLM", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 128,
                               "vocab_size": V, "max_position_embeddings": 64, "word_embed_proj_dim": 64,
                               "pad_token_id": 0}, "lm"),
    "bloom": ("BloomForCausalLM", {"hidden_size": 64, "n_layer": 2, "n_head": 4, "vocab_size": V}, "lm"),
    "falcon": ("FalconForCausalLM", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                     "vocab_size": V}, "lm"),
    "mamba": ("MambaForCausalLM", {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": V, "state_size": 8,
                                   "expand": 2}, "lm"),
    "mamba2": ("Mamba2ForCausalLM", {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": V, "state_size": 8,
                                     "num_heads": 8, "head_dim": 16, "n_groups": 1, "expand": 2, "chunk_size": 8},
               "lm"),
    "falcon_mamba": ("FalconMambaForCausalLM", {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": V,
                                                "state_size": 8, "expand": 2}, "lm"),
    "jamba": ("JambaForCausalLM", {**_DEC, "num_experts": 4, "num_experts_per_tok": 2, "attn_layer_period": 2,
                                   "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1,
                                   "mamba_d_state": 8, "mamba_expand": 2, "use_mamba_kernels": False}, "lm"),
    "bert": ("BertForSequenceClassification", _ENC, "cls"),
    "roberta": ("RobertaForSequenceClassification", {**_ENC, "pad_token_id": 1}, "cls"),
    "xlm_roberta": ("XLMRobertaForSequenceClassification", {**_ENC, "pad_token_id": 1}, "cls"),
    "albert": ("AlbertForSequenceClassification", {**_ENC, "embedding_size": 32}, "cls"),
    "electra": ("ElectraForSequenceClassification", {**_ENC, "embedding_size": 32}, "cls"),
    "distilbert": ("DistilBertForSequenceClassification", {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128,
                                                           "vocab_size": V, "max_position_embeddings": 64,
                                                           "num_labels": 3}, "cls"),
    "deberta_v2": ("DebertaV2ForSequenceClassification", _ENC, "cls"),
    "modernbert": ("ModernBertForSequenceClassification", {**_ENC, "global_attn_every_n_layers": 2}, "cls"),
    "t5": ("T5ForConditionalGeneration", {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4, "d_kv": 16,
                                          "vocab_size": V, "decoder_start_token_id": 0}, "lm"),
    "bart": ("BartForConditionalGeneration", {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
                                              "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                                              "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": V,
                                              "max_position_embeddings": 64}, "lm"),
    "vit": ("ViTForImageClassification", _VIT, "img"),
    "deit": ("DeiTForImageClassification", _VIT, "img"),
    "dinov2": ("Dinov2ForImageClassification", _VIT, "img"),
    "swin": ("SwinForImageClassification", {**_IMG, "embed_dim": 32, "depths": [1, 1], "num_heads": [2, 4],
                                            "window_size": 4, "patch_size": 2}, "img"),
    "convnext": ("ConvNextForImageClassification", _STAGES, "img"),
    "resnet": ("ResNetForImageClassification", {**_STAGES, "embedding_size": 16}, "img"),
}

#: The representative dozen the default suite runs (the rest: `python -m pytest -m slow tests/kernel/test_hf_zoo.py`).
DEFAULT = ("llama_tied", "qwen3_moe", "gemma3", "mixtral", "gpt_neox", "mamba2", "albert", "deberta_v2", "t5",
           "bart", "swin", "convnext")


def build(name: str, seed: int = 0):
    """The named model, random init from ``seed``, eval mode."""
    import torch
    import transformers

    cls_name, cfg, _ = ZOO[name]
    cls = getattr(transformers, cls_name)
    torch.manual_seed(seed)
    return cls(cls.config_class(**cfg)).eval()


def data(name: str, n: int = 16, seed: int = 1):
    """(x, y) for the named model: token ids (labels = ids for LMs, 3 classes for classifiers) or images."""
    import torch

    kind = ZOO[name][2]
    g = torch.Generator().manual_seed(seed)
    if kind == "img":
        return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(3, V, (n, 12), generator=g)
    return x, (x.clone() if kind == "lm" else torch.randint(0, 3, (n,), generator=g))

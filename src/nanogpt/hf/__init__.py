"""Hugging Face ``transformers``: GPT-2 weights in (``model.init_from``), GPT-2 and Llama folders out.

``gpt2`` converts our GPT to and from ``GPT2LMHeadModel`` (and reads OpenAI's GPT-2 for
``init_from``), ``llama`` writes a model with rotary positions, RMSNorm and SwiGLU as
``LlamaForCausalLM``, and ``export`` is the ``nanogpt-export`` job. ``fields`` is the one table of
what each of them does with every ``GPTConfig`` field. ``transformers`` is an optional
extra (``pip install -e ".[hf]"``), imported only by the functions that need it.
"""

"""Text that a model writes for distillation: per-image captions (VLM-KD) and per-class descriptions (OOD paper).

`prompts` holds the templates, `postprocess` cleans and truncates generations, `store` keeps the resumable JSONL,
`backend` defines the model interface with two implementations (`hf`: transformers, `endpoint`: an OpenAI-compatible
chat server) that `factory.create_backend` chooses between, and `captions` / `describe` run them over a dataset / a
class list. Nothing here imports torch at module level: the endpoint backend needs only the standard library.
"""

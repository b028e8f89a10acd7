"""Models: resolving a model name or folder (`resolve`), the classifier and token-classifier heads over
any encoder (`classifier`), language models for pretraining (`lm`), tokenizers trained on a corpus
(`tokenizers`) and exact parameter counts on the meta device (`params`)."""

"""Training: the loop on Accelerate (`loop`), AdamW groups (`optim`), kill-safe checkpoints
(`checkpoint`), several processes (`distributed`, `fsdp`, `launch`) and training memory, estimated
before a run (`memory_estimate`) and measured during one (`memory_measure`). Nothing here knows a task
or a method by name: the loop asks the task for the loss and the method for its parameter groups."""

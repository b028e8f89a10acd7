"""`transferkit compare`: every method on the same data, seed and budget (`run`), and the grid of
methods x training sizes x augmentation x seeds (`grid`); the table they write is `reporting.comparison`."""

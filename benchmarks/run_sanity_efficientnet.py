import time
import numpy as np
from keras_pathways import models
from keras_pathways.demo import PHOTOS, photo
from keras_pathways.evaluation import sanity
from keras_pathways.evaluation.sanity import format_sanity
start = time.perf_counter()
model = models.efficientnet_lite0()
x = np.concatenate([models.preprocess_input(photo(n)) for n in PHOTOS])
result = sanity(model, x, methods=("pathway_gradient", "gradient", "guided_backprop", "integrated_gradients"),
                groups=8, batch_size=4, out_dir="sanity_effnet",
                method_options={"pathway_gradient": {"sparsity": 0.7}, "integrated_gradients": {"steps": 16}})
print(format_sanity(result))
print(f"total {time.perf_counter() - start:.0f} s")

/* Eval callback for llama.cpp: copies the last row of named layer outputs (l_out-N) while
 * armed and answers "not interested" in one branch while dormant, so a model with an
 * intermediate-layer probe decodes as fast as one without. Compiled once by lynx_edge. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct ggml_tensor;
const char *ggml_get_name(const struct ggml_tensor *t);
size_t ggml_nbytes(const struct ggml_tensor *t);
void ggml_backend_tensor_get(const struct ggml_tensor *t, void *data, size_t offset, size_t size);

#define LYNX_MAX_LAYERS 16

typedef struct {
    int armed;
    int n_names;
    int n_embd;
    int captured;
    char names[LYNX_MAX_LAYERS][32];
    float *out[LYNX_MAX_LAYERS];
} lynx_capture;

bool lynx_capture_cb(struct ggml_tensor *t, bool ask, void *user_data) {
    lynx_capture *c = (lynx_capture *)user_data;
    if (!c->armed) {
        return false;
    }
    const char *name = ggml_get_name(t);
    for (int i = 0; i < c->n_names; i++) {
        if (strcmp(name, c->names[i]) == 0) {
            if (!ask) {
                size_t row = sizeof(float) * (size_t)c->n_embd;
                ggml_backend_tensor_get(t, c->out[i], ggml_nbytes(t) - row, row);
                c->captured |= 1 << i;
            }
            return true;
        }
    }
    return false;
}

/* Eval callback for llama.cpp: while armed, copies the rows of named layer outputs (l_out-N)
 * of the batch being decoded; while dormant it answers "not interested" in one branch, so a
 * model with an intermediate-layer probe decodes as fast as one without. Compiled once by
 * lynx_edge (runtime/llama_backend.py holds the same struct and a Python twin). */
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
    int captured;  /* bit i: layer i was copied during this decode */
    int max_rows;  /* rows each output buffer holds */
    int rows[LYNX_MAX_LAYERS];  /* rows copied per layer */
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
                size_t size = ggml_nbytes(t);
                size_t room = row * (size_t)c->max_rows;
                if (size > room) {
                    size = room;
                }
                ggml_backend_tensor_get(t, c->out[i], 0, size);
                c->rows[i] = (int)(size / row);
                c->captured |= 1 << i;
            }
            return true;
        }
    }
    return false;
}

// placeholder: being written
#include "host/pictures.h"

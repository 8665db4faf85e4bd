// placeholder: being written
#include "gatherstats/json/flatten.hpp"

/* placeholder: written by the JS client work */

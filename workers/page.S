/* The upload page, compiled into intaked as bytes (see ws.h). */
    .section .rodata
    .global page_html
    .global page_html_end
    .balign 16
page_html:
    .incbin "workers/page.html"
page_html_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits

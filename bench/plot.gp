# bench/plot.gp — throughput vs prefetch of one observe_on hop, rill vs RxJava 3.
# Called by bench/compare (make bench-plot) with -e "datafile='...'; outfile='...'; plottitle='...'".
# datafile columns: prefetch, rill items/s, RxJava items/s, C spin-then-park ring at 256 ("?" = none).
if (!exists("datafile")) datafile = 'prefetch.dat'
if (!exists("outfile")) outfile = 'bench-prefetch.png'
if (!exists("plottitle")) plottitle = 'one observe_on hop'
set terminal pngcairo size 900,560 font ",11" noenhanced
set output outfile
set datafile missing '?'
set title plottitle
set logscale xy
set xlabel 'prefetch (observe_on ring / RxJava observeOn buffer)'
set ylabel 'items per second'
set format y '%.0s%c'
set xtics (16, 64, 128, 256, 1024)
set key bottom right box opaque
set xrange [11:1500]
set grid xtics ytics mytics
plot datafile using 1:2 with linespoints lw 2 pt 7 title 'rill: range -> subscribe_on -> observe_on -> sink', \
     datafile using 1:3 with linespoints lw 2 pt 5 title 'RxJava 3: range.subscribeOn(computation).observeOn(single)', \
     datafile using 1:4 with points pt 9 ps 2 title 'C floor: SPSC ring, spin 20 us then park'

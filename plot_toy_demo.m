% plot_toy_demo.m -- one panel of the paper's Figures 1-2 from a generate_toy_demo.py run (docs/toy.md).
% Runs in MATLAB and in GNU Octave:
%     matlab -batch plot_toy_demo            octave --no-gui plot_toy_demo.m
% Set the run folder (and, for a --save-every snapshot, the iteration) below. The figure is shown and also
% written to <folder>/posterior.png (or posterior_<ite>.png).

folder = 'toy_results/PGDAT_KL';            % the reference plotted 'PGDAT_KL/'
% folder = 'toy_results/PGDATconsistent_KL';
% folder = 'toy_results/Standard_KL';
ite = [];                                    % e.g. ite = 100 reads x_test_100.txt ... (--save-every 100)
learned_label = ' Learned by PGD-AT';        % legend text of the learned posterior

if isempty(ite)
    suffix = '';
else
    suffix = sprintf('_%d', ite);
end
x_test = importdata(fullfile(folder, ['x_test' suffix '.txt']));
y_test = importdata(fullfile(folder, ['y_test' suffix '.txt']));
pre_test = importdata(fullfile(folder, ['pre_test' suffix '.txt']));

fprintf('mean |learned - true| P(Y=0|X) = %.4f\n', mean(abs(pre_test(:, 1) - y_test(:, 1))));

if exist('OCTAVE_VERSION', 'builtin') && isempty(getenv('DISPLAY'))
    set(0, 'defaultfigurevisible', 'off');   % headless Octave: draw off screen, still print the PNG
end
fig = figure('Position', [100, 100, 800, 600]);
set(fig, 'PaperUnits', 'inches', 'PaperPosition', [0, 0, 8, 6]);   % an 800 x 600 PNG at 100 dpi
scatter(x_test, y_test(:, 1), 80, [0, 139, 139] / 255, 'filled');      % ground truth P(Y=0|x)
hold on
scatter(x_test, pre_test(:, 1), 80, [0.85, 0.325, 0.098], 'filled');   % learned P(Y=0|x)
grid on
ylim([0, 1]);
yticks_ = 0:0.1:1;
xlim([-5, 8]);
set(gca, 'YTick', yticks_, 'XTick', -5:8, 'FontName', 'Times New Roman', 'FontSize', 23);

% Legend proxies as in the reference (there the legend call was commented out).
h1 = plot(NaN, NaN, 'o', 'MarkerSize', 15, 'LineWidth', 2.5, 'MarkerFaceColor', [0, 139, 139] / 255, ...
          'MarkerEdgeColor', [0, 139, 139] / 255);
h2 = plot(NaN, NaN, 'o', 'MarkerSize', 15, 'LineWidth', 2.5, 'MarkerFaceColor', [0.85, 0.325, 0.098], ...
          'MarkerEdgeColor', [0.85, 0.325, 0.098]);
% legend([h1, h2], {' Ground truth', learned_label}, 'Location', 'southwest');
% xlabel('$X$', 'Interpreter', 'latex', 'FontSize', 28);
% ylabel('$P(Y=0|X)$', 'Interpreter', 'latex', 'FontSize', 28);
% plot([1, 1], [0, 1], '--k');
hold off

png = fullfile(folder, ['posterior' suffix '.png']);
if exist('OCTAVE_VERSION', 'builtin') && strcmp(graphics_toolkit(), 'gnuplot')
    print(fig, png, '-dpngcairo', '-r100');   % Octave's gnuplot toolkit: -dpng would need Ghostscript
else
    print(fig, png, '-dpng', '-r100');
end
fprintf('wrote %s\n', png);
